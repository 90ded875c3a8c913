"""Admin operations on parameter files: load the factory origin, export a pack's parameters, and
import a file (validated, shown as differences, optionally written through the parameter writes).
The file formats are `gateway.ops.admin.transfer`."""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import datetime
from typing import Any

from gateway.ops.admin import param_rules, transfer
from gateway.ops.admin.base import (
    Action,
    Caller,
    PackAction,
)
from gateway.ops.admin.packs import label
from gateway.ops.admin.parameters import ParametersMixin
from gateway.ops.security.auth import Role
from gateway.ops.security.errors import Invalid

log = logging.getLogger(__name__)

_IMPORT = Action("parameters.import", Role.ADMIN, "importing parameters")


class ParameterFilesMixin(ParametersMixin):
    # ---- export / import -------------------------------------------------------------------------

    async def export(
        self,
        caller: Caller,
        bus: str,
        address: int,
        fmt: str,
        *,
        fresh: bool = False,
        per_pack_state: bool = False,
    ) -> tuple[bytes, str, str]:
        """(file, media type, file name) of a pack's parameters; per-pack state only when asked."""
        self.require(caller, Role.OPERATOR, "exporting parameters")
        if fmt not in transfer.FORMATS:
            raise Invalid(f"unknown format {fmt!r}; allowed: {', '.join(transfer.FORMATS)}")
        key = self.pack(bus, address)
        table = self.table(key)
        values, read_at, _ = await self.current_parameters(key, fresh=fresh)
        meta = {
            "pack": label(key),
            "family": table.family,
            "read_at": ""
            if read_at is None
            else datetime.fromtimestamp(read_at).isoformat(timespec="seconds"),
        }
        data = transfer.render_file(fmt, table, values, meta, per_pack=per_pack_state)
        stamp = datetime.fromtimestamp(read_at or self._wall()).strftime("%Y%m%d%H%M%S")
        return data, transfer.MEDIA_TYPES[fmt], f"protect_alarm_{bus}_{address}_{stamp}.{fmt}"

    async def import_file(
        self,
        caller: Caller,
        bus: str,
        address: int,
        text: str | bytes,
        *,
        fmt: str | None = None,
        apply: bool = False,
        allow_inferred: bool = False,
        per_pack_state: bool = False,
        force: bool = False,
    ) -> dict[str, Any]:
        """Validate a parameter file and show the rows that differ from the pack; with `apply`, write them.
        The resulting table is checked against the parameter rules, in the preview too. Rows of
        per-pack state are skipped (listed under `skipped`) unless `per_pack_state`."""

        async def body(act: PackAction) -> dict[str, Any]:
            key = act.key
            table = self.table(key)
            try:
                pairs = transfer.parse_file(text.encode("utf-8") if isinstance(text, str) else text, fmt)
            except transfer.ImportFormatError as err:
                raise Invalid(f"the file cannot be read: {err}") from None
            values, problems = transfer.validate_rows(table, pairs, per_pack=per_pack_state)
            skipped = [] if per_pack_state else transfer.per_pack_rows(table, pairs)
            if problems:
                raise Invalid(
                    f"{len(problems)} row(s) refused: " + "; ".join(p.message for p in problems[:5]),
                    [
                        {"row": p.row, "parameter": p.name, "value": p.value, "message": p.message}
                        for p in problems
                    ],
                )
            current, _, _ = await self.current_parameters(key, fresh=False)
            changes = transfer.diff(table, current, values)
            try:
                checked = await param_rules.check_plan(
                    self, {key: {c.name: c.new for c in changes}}, force=force
                )
            except Invalid as err:  # name the file's rows of the parameters each broken rule involves
                rows = {name: i for i, (name, _) in enumerate(pairs, 1)}
                err.errors = [
                    {**e, "rows": sorted(rows[n] for n in e.get("parameters", []) if n in rows)}
                    for e in err.errors
                ]
                raise
            preview = {
                "pack": label(key),
                "family": table.family,
                "rows": len(pairs),
                "unchanged": len(values) - len(changes),
                "changes": [asdict(c) for c in changes],
                "skipped": [{"row": r.row, "parameter": r.name, "message": r.message} for r in skipped],
            }
            if not apply:
                await self._record_pack(act, outcome="dry_run", detail=f"{len(changes)} change(s) previewed")
                return {**preview, "applied": False, "result": None}
            if not changes:
                await self._record_pack(act, outcome="ok", detail="nothing to change")
                return {**preview, "applied": True, "result": None}
            result = await self.write_plan(
                caller,
                act.name,
                {key: {c.name: c.new for c in changes}},
                dry_run=False,
                allow_inferred=allow_inferred,
                force=force,
                request=act.request,
            )
            return {
                **preview,
                "applied": True,
                "result": result,
                "reported": checked.reported.get(label(key), []),
            }

        return await self._on_pack(
            _IMPORT, caller, bus, address, body, format=fmt, apply=apply, force=force, bytes=len(text)
        )
