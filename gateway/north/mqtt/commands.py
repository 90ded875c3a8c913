"""Admin commands over MQTT: `<base>/cmd/<action>` in, `<base>/cmd/<action>/reply` out.

A command is a JSON object carrying a bearer token of the admin API, a `request_id`, the pack(s) and
the action's arguments. It goes through exactly what an HTTP admin request goes through: the same
`TokenStore` (401), the same per-token `RateLimiter` budget (429), the same role per action (403),
then the `AdminService`, which validates (422/409), runs the action through the bus owner and audits
it. The reply carries the request id, the HTTP status code and the result (or the error).

Every command that gets a reply other than 429 leaves one audit entry (client `mqtt:<client_id>`): the
service audits its own actions; refusals made here (malformed, 401, 403, 404, bad arguments, expired)
and the read actions the service does not audit are recorded here.

This module must never talk to a bus or to the broker itself (replies are handed to the MQTT
adapter's outgoing buffer), never act on a retained message, and never let a payload crash the
adapter: every failure becomes an error reply or, when unauthenticated senders exceed their budget,
a counted drop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.ops.admin.service import AdminError, AdminService, Caller, Invalid
from gateway.ops.security.auth import AuthError, Principal, RateLimiter, Role, TokenStore

log = logging.getLogger(__name__)

QUEUE_SIZE = 100  # commands waiting for the worker; beyond this they are dropped and counted
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_TOPIC_CHARS = 256
ANONYMOUS_KEY = "mqtt:anonymous"  # rate-limit key of every message that did not authenticate
NO_TOKEN_ID = "-"  # audit token id when the payload named no parseable token
CLIENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # self-declared by the sender, recorded as mqtt:<id>

Reply = Callable[[str, bytes], None]


# ---- payloads ------------------------------------------------------------------------------------


class _Args(BaseModel):
    """The envelope every command carries; each action adds its own arguments (unknown keys: 422)."""

    model_config = ConfigDict(extra="forbid")

    token: str
    request_id: str | int | None = Field(default=None, description="echoed in the reply")
    reply_to: str | None = Field(default=None, max_length=MAX_TOPIC_CHARS)
    client_id: str | None = Field(default=None, pattern=f"^{CLIENT_ID.pattern}$")
    expires_at: float | None = Field(default=None, description="unix time after which it must not run")

    @model_validator(mode="after")
    def _request_id_length(self) -> _Args:
        if isinstance(self.request_id, str) and len(self.request_id) > 128:
            raise ValueError("request_id: at most 128 characters")
        return self


class _Packs(_Args):
    """Either `pack` ("BUS/ADDRESS") or `packs` (a list, or "all")."""

    pack: str | None = None
    packs: list[str] | Literal["all"] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> _Packs:
        if (self.pack is None) == (self.packs is None):
            raise ValueError('give exactly one of "pack" ("BUS/ADDRESS") or "packs" (a list, or "all")')
        if isinstance(self.packs, list) and not self.packs:
            raise ValueError('"packs" is empty: name at least one pack, or give "all"')
        return self

    def names(self) -> list[str] | None:
        """The pack names for the service (None: every configured pack)."""
        if self.pack is not None:
            return [self.pack]
        return None if self.packs == "all" else list(self.packs or [])


class WhoamiArgs(_Args):
    pass


class ParametersReadArgs(_Args):
    pack: str
    fresh: bool = False  # read from the pack now instead of the last snapshot
    names: list[str] | None = None  # only these parameters (default: all)


class ParametersWriteArgs(_Packs):
    values: dict[str, Any] = Field(min_length=1)
    dry_run: bool = False
    allow_inferred: bool = False
    force: bool = False  # past the parameter rules' warnings (recommended ranges), audited


class ControlArgs(_Args):
    pack: str
    control: str  # charge_mos, discharge_mos, heater, fan, buzzer, sound_light_alarm, forced_sleep, ...
    on: bool = True
    allow_inferred: bool = False


class ClockSyncArgs(_Packs):
    pass


class GatewayProtocolsArgs(_Args):
    can: str | None = None
    rs485: str | None = None


# ---- actions -------------------------------------------------------------------------------------


def _split(pack: str) -> tuple[str, int]:
    bus, sep, addr = pack.rpartition("/")
    if not sep or not bus or not addr.isdigit():
        raise Invalid(f"pack {pack!r}: expected BUS/ADDRESS, e.g. sim/1")
    return bus, int(addr)


async def _whoami(admin: AdminService, caller: Caller, args: Any) -> Any:
    p = caller.principal
    return {"token_id": p.token_id, "role": caller.role.label, "label": p.label, "client": caller.client}


async def _parameters_read(admin: AdminService, caller: Caller, args: Any) -> Any:
    a: ParametersReadArgs = args
    bus, address = _split(a.pack)
    result: dict[str, Any] = await admin.parameters(caller, bus, address, fresh=a.fresh)
    if a.names is not None:
        known = {row["name"] for row in result["parameters"]}
        unknown = [n for n in a.names if n not in known]
        if unknown:
            raise Invalid(
                f"{result['family']}: unknown parameter(s) {', '.join(map(repr, unknown))}",
                [{"parameter": n, "message": "unknown parameter"} for n in unknown],
            )
        wanted = set(a.names)
        result["parameters"] = [row for row in result["parameters"] if row["name"] in wanted]
    return result


async def _parameters_write(admin: AdminService, caller: Caller, args: Any) -> Any:
    a: ParametersWriteArgs = args
    return await admin.write_parameters(
        caller, a.names(), a.values, dry_run=a.dry_run, allow_inferred=a.allow_inferred, force=a.force
    )


async def _control(admin: AdminService, caller: Caller, args: Any) -> Any:
    a: ControlArgs = args
    bus, address = _split(a.pack)
    return await admin.control(caller, bus, address, a.control, a.on, allow_inferred=a.allow_inferred)


async def _clock_sync(admin: AdminService, caller: Caller, args: Any) -> Any:
    a: ClockSyncArgs = args
    return await admin.sync_clocks(caller, a.names())


async def _gateway_protocols(admin: AdminService, caller: Caller, args: Any) -> Any:
    a: GatewayProtocolsArgs = args
    return await admin.set_gateway_protocols(caller, can=a.can, rs485=a.rs485)


@dataclass(frozen=True, slots=True)
class Action:
    name: str  # the topic level after `cmd/`
    role: Role  # the weakest role allowed (the same as the HTTP route's)
    args: type[_Args]
    run: Callable[[AdminService, Caller, Any], Awaitable[Any]]
    audit_action: str  # the audit log's action name (the service's own name where it audits)
    service_audits: bool  # the service appends the entry for results and 403/409/422 refusals
    summary: str


# One row per command; docs/mqtt.md has the same table.
ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action("whoami", Role.VIEWER, WhoamiArgs, _whoami, "mqtt.whoami", False, "the token's id and role"),
        Action(
            "parameters_read",
            Role.OPERATOR,
            ParametersReadArgs,
            _parameters_read,
            "parameters.read",
            False,
            "a pack's parameters (value, unit, range, default, access)",
        ),
        Action(
            "parameters_write",
            Role.ADMIN,
            ParametersWriteArgs,
            _parameters_write,
            "parameters.write",
            True,
            "write parameters to one, several or all packs, read back (dry_run: preview only)",
        ),
        Action(
            "control",
            Role.ADMIN,
            ControlArgs,
            _control,
            "control",
            True,
            "MOS, heater, fan, buzzer, sound/light alarm, forced sleep, shutdown, current limiter",
        ),
        Action(
            "clock_sync",
            Role.OPERATOR,
            ClockSyncArgs,
            _clock_sync,
            "clock.sync",
            True,
            "write the gateway's time to packs and read it back",
        ),
        Action(
            "gateway_protocols",
            Role.ADMIN,
            GatewayProtocolsArgs,
            _gateway_protocols,
            "gateway.protocols",
            True,
            "switch the gateway's CAN / RS485 inverter protocol (persisted in the config file)",
        ),
    )
}


# ---- replies -------------------------------------------------------------------------------------


class CommandError(Exception):
    """A refusal made by this module (before or instead of the service)."""

    def __init__(self, status: int, message: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []


@dataclass(frozen=True, slots=True)
class CommandReply:
    topic: str
    document: dict[str, Any]

    @property
    def status(self) -> int:
        status: int = self.document["status"]
        return status

    def encode(self) -> bytes:
        return json.dumps(self.document, separators=(",", ":"), sort_keys=True, default=str).encode()


@dataclass(slots=True)
class CommandStats:
    received: int = 0
    replied: int = 0
    ignored_retained: int = 0
    dropped_queue_full: int = 0
    dropped_anonymous: int = 0  # unauthenticated messages beyond the anonymous budget: no reply
    rate_limited: int = 0  # answered 429 (not audited)
    failed: int = 0  # a message the worker could not handle at all (logged)


def _validation_errors(err: ValidationError) -> list[dict[str, Any]]:
    out = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "payload"
        out.append({"parameter": where, "message": f"{where}: {e['msg']}"})
    return out


# ---- the handler ---------------------------------------------------------------------------------


class CommandHandler:
    """Turns command messages into admin-service calls and replies; see the module docstring."""

    def __init__(
        self,
        admin: AdminService,
        tokens: TokenStore,
        limiter: RateLimiter,
        base_topic: str,
        *,
        queue_size: int = QUEUE_SIZE,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._wall = wall
        self.admin = admin
        self.tokens = tokens
        self.limiter = limiter
        self.base = base_topic
        self.prefix = f"{base_topic}/cmd/"
        self.stats = CommandStats()
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(queue_size)

    @classmethod
    def from_context(cls, ctx: Any) -> CommandHandler:
        """The handler over the admin service and token store the HTTP admin API installed."""
        admin = ctx.extras.get("admin")
        auth = ctx.extras.get("admin_auth")
        if not isinstance(admin, AdminService) or auth is None:
            raise RuntimeError(
                "MQTT commands need the admin service (gateway.north.http.admin.install) first"
            )
        tokens, limiter = auth
        return cls(admin, tokens, limiter, ctx.config.mqtt.base_topic)

    # ---- topics ----------------------------------------------------------------------------------

    @property
    def topic_filter(self) -> str:
        return f"{self.prefix}+"

    def action_of(self, topic: str) -> str | None:
        """The action level of a command topic `<base>/cmd/<action>`; None for any other topic."""
        if not topic.startswith(self.prefix):
            return None
        rest = topic[len(self.prefix) :]
        return rest if rest and "/" not in rest else None

    def reply_topic(self, action: str) -> str:
        return f"{self.prefix}{action}/reply"

    def _check_reply_to(self, topic: str) -> None:
        """A reply topic chosen by the requester: under `<base>/cmd/`, at least two levels below it (so
        never a command topic), no wildcards. The gateway must not become a way to publish where the
        requester could not (broker ACLs)."""
        levels = topic[len(self.prefix) :].split("/") if topic.startswith(self.prefix) else []
        if (
            len(levels) < 2
            or any(not lv for lv in levels)
            or any(c in topic for c in "#+\0")
            or len(topic) > MAX_TOPIC_CHARS
        ):
            raise CommandError(
                422,
                f"reply_to {topic!r}: must be a topic under {self.prefix} with at least two levels below "
                f"it and no wildcards, e.g. {self.prefix}replies/my-automation",
                [{"parameter": "reply_to", "value": topic, "message": "not an allowed reply topic"}],
            )

    # ---- intake (called from the adapter's listener: never blocks) -------------------------------

    def submit(self, topic: str, payload: bytes, *, retain: bool) -> bool:
        """Queue a command message for the worker. Retained messages are ignored (a retained command
        would run again at every connection). Returns whether it was queued."""
        if retain:
            self.stats.ignored_retained += 1
            log.warning("ignoring a retained MQTT command on %s (commands are never retained)", topic)
            return False
        try:
            self._queue.put_nowait((topic, payload))
        except asyncio.QueueFull:
            self.stats.dropped_queue_full += 1
            log.warning("MQTT command queue full: dropped a command on %s", topic)
            return False
        return True

    async def run(self, reply: Reply) -> None:
        """The worker: one command at a time, in arrival order; each reply handed to `reply`."""
        while True:
            topic, payload = await self._queue.get()
            action = self.action_of(topic)
            if action is None:
                continue
            try:
                answer = await self.handle(action, payload)
                if answer is not None:
                    reply(answer.topic, answer.encode())
                    self.stats.replied += 1
            except Exception:  # handle() answers every failure itself; this is the last line of defence
                self.stats.failed += 1
                log.exception("MQTT command on %s could not be handled", topic)

    # ---- one command -----------------------------------------------------------------------------

    async def handle(self, action_name: str, payload: bytes) -> CommandReply | None:
        """Authenticate, authorize, validate and run one command. None: dropped without a reply (an
        unauthenticated sender over its budget)."""
        self.stats.received += 1
        action = ACTIONS.get(action_name)
        audit_action = action.audit_action if action else f"mqtt.{action_name[:64]}"
        topic = self.reply_topic(action_name)
        request_id: Any = None
        principal: Principal | None = None
        token_id = NO_TOKEN_ID
        client = "mqtt:unknown"
        request: Any = {"action": action_name}
        try:
            data = self._parse(payload)
            request_id = data.get("request_id")
            if not isinstance(request_id, str | int) or isinstance(request_id, bool):
                request_id = None
            elif isinstance(request_id, str):
                request_id = request_id[:128]
            cid = data.get("client_id")
            if isinstance(cid, str) and CLIENT_ID.fullmatch(cid):
                client = f"mqtt:{cid}"
            # until the token is accepted only the key names are recorded: a secret pasted under
            # another key must not end up in the audit log
            request = {"request_id": request_id, "keys": sorted(str(k)[:64] for k in data)[:64]}
            token = data.get("token")
            if isinstance(token, str):
                token_id = token.partition("_")[2].partition("_")[0][:32] or NO_TOKEN_ID
            principal = self._authenticate(token)
            request = {k: v for k, v in data.items() if k != "token"}
            if not self.limiter.allow(principal.token_id):
                raise CommandError(
                    429,
                    f"rate limit of {self.limiter.per_minute} requests per minute exceeded for token "
                    f"{principal.token_id}",
                )
            if action is None:
                known = ", ".join(sorted(ACTIONS))
                raise CommandError(404, f"unknown command {action_name!r}; known: {known}")
            if principal.role < action.role:
                raise CommandError(
                    403,
                    f"{action.name} needs a token with the {action.role.label} role or higher; token "
                    f"{principal.token_id} has the {principal.role.label} role",
                )
            try:
                args = action.args.model_validate(data)
            except ValidationError as err:
                errors = _validation_errors(err)
                raise CommandError(422, "; ".join(e["message"] for e in errors), errors) from None
            if args.reply_to is not None:
                self._check_reply_to(args.reply_to)
                topic = args.reply_to
            if args.expires_at is not None and self._wall() > args.expires_at:
                raise CommandError(
                    409,
                    f"expired: expires_at {args.expires_at:.0f} is past (gateway time "
                    f"{self._wall():.0f}); not run",
                )
        except CommandError as err:
            if principal is None and not self.limiter.allow(ANONYMOUS_KEY):
                self.stats.dropped_anonymous += 1
                return None
            if err.status == 429:  # as over HTTP: not audited (a token holder cannot flood the log)
                self.stats.rate_limited += 1
            else:
                role = principal.role.label if principal else "none"
                await self._audit(
                    principal, token_id, role, client, audit_action, request, err.status, err.message
                )
            return CommandReply(
                topic, self._error(action_name, request_id, err.status, err.message, err.errors)
            )
        assert action is not None and principal is not None
        caller = Caller(principal, client)
        try:
            result = await action.run(self.admin, caller, args)
        except AdminError as err:
            if not action.service_audits or err.status not in (403, 409, 422):
                await self._audit(
                    principal,
                    token_id,
                    principal.role.label,
                    client,
                    audit_action,
                    request,
                    err.status,
                    err.message,
                )
            return CommandReply(
                topic, self._error(action_name, request_id, err.status, err.message, err.errors)
            )
        except Exception as err:  # a bug must not take the adapter down: answer 500 and keep serving
            log.exception("MQTT command %s failed", action_name)
            message = f"internal error: {type(err).__name__}"
            await self._audit(
                principal, token_id, principal.role.label, client, audit_action, request, 500, message
            )
            return CommandReply(topic, self._error(action_name, request_id, 500, message, []))
        if not action.service_audits:
            await self._audit(
                principal, token_id, principal.role.label, client, audit_action, request, 200, ""
            )
        return CommandReply(
            topic, {"request_id": request_id, "action": action_name, "status": 200, "result": result}
        )

    @staticmethod
    def _parse(payload: bytes) -> dict[str, Any]:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise CommandError(422, f"payload larger than {MAX_PAYLOAD_BYTES} bytes")
        try:
            data = json.loads(payload.decode("utf-8"))
        except UnicodeDecodeError:
            raise CommandError(422, "payload is not UTF-8 text") from None
        except ValueError as err:
            raise CommandError(422, f"payload is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise CommandError(422, f"payload must be a JSON object, not {type(data).__name__}")
        return data

    def _authenticate(self, token: object) -> Principal:
        hint = "(create one with: bms-gateway token create --role ROLE)"
        if not isinstance(token, str) or not token:
            raise CommandError(401, f'no token: the payload needs "token": "bmsg_..." {hint}')
        try:
            return self.tokens.authenticate(token)
        except AuthError as err:
            raise CommandError(401, f"{err} {hint}") from None
        except (OSError, ValueError, TypeError, KeyError) as err:  # unreadable token file
            log.error("token store %s unreadable: %s", self.tokens.path, err)
            raise CommandError(401, "the token store cannot be read; see the gateway log") from None

    @staticmethod
    def _error(action: str, request_id: Any, status: int, message: str, errors: list[Any]) -> dict[str, Any]:
        return {
            "request_id": request_id,
            "action": action,
            "status": status,
            "error": message,
            "errors": errors,
        }

    async def _audit(
        self,
        principal: Principal | None,
        token_id: str,
        role: str,
        client: str,
        action: str,
        request: Mapping[str, Any] | Any,
        status: int,
        message: str,
    ) -> None:
        outcome = "ok" if status == 200 else ("failed" if status >= 500 else "refused")
        try:
            await asyncio.to_thread(
                self.admin.audit_log.append,
                token_id=principal.token_id if principal else token_id,
                role=role,
                client=client,
                action=action,
                packs=_packs_of(request),
                request=request,
                outcome=outcome,
                detail=f"{status}: {message}"[:2000] if message else str(status),
            )
        except Exception:  # the audit must never turn a reply into a crash
            log.exception("audit append failed for MQTT command %s", action)


def _packs_of(request: Any) -> list[str]:
    if not isinstance(request, Mapping):
        return []
    packs = request.get("packs")
    if isinstance(packs, list):
        return [str(p) for p in packs][:64]
    pack = request.get("pack")
    return [str(pack)] if isinstance(pack, str) else []
