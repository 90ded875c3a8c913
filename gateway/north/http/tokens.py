"""Token management over HTTP (admin): list, create and revoke the admin API's bearer tokens.

The same token file as `bms-gateway token create|list|revoke`; secrets are stored hashed and a new
token is answered once. An admin may create tokens up to the admin role (factory tokens only from
the CLI on the box), and cannot revoke the token it is using (it would lock itself out). Every
change is audited (`tokens.create`, `tokens.revoke`).

This module never returns a stored hash and never talks to a bus.
"""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.north.http.auth import bearer_caller
from gateway.ops.admin.service import AdminService, Caller
from gateway.ops.security.auth import RateLimiter, Role, TokenStore


class TokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON types as declared
    role: str = Field(description="viewer, operator or admin")
    label: str = Field(default="", max_length=100, description="who or what uses the token")


def tokens_router(admin: AdminService, tokens: TokenStore, limiter: RateLimiter) -> APIRouter:
    router = APIRouter(prefix="/api/admin", tags=["admin"])
    Admin = Annotated[Caller, Depends(bearer_caller(Role.ADMIN, tokens, limiter, lambda: admin.audit_log))]

    def listing() -> list[dict[str, Any]]:
        return [
            {"id": r.id, "role": r.role, "label": r.label, "created_at": r.created_at, "revoked": r.revoked}
            for r in tokens.records()
        ]

    @router.get("/tokens")
    async def list_tokens(who: Admin) -> Any:
        """Every token: id, role, label, creation time, revoked (never the secret or its hash) (admin)."""
        return await asyncio.to_thread(listing)

    @router.post("/tokens")
    async def create_token(who: Admin, body: TokenBody) -> Any:
        """Create a token up to the admin role; the answer carries the token once (admin)."""
        request = {"role": body.role, "label": body.label}
        try:
            role = Role.parse(body.role)
        except ValueError as err:
            await admin.record(who, "tokens.create", [], request, outcome="refused", detail=str(err))
            return JSONResponse({"detail": str(err)}, status_code=422)
        if role > Role.ADMIN:
            detail = "factory tokens are created only on the box: bms-gateway token create --role factory"
            await admin.record(who, "tokens.create", [], request, outcome="refused", detail=detail)
            return JSONResponse({"detail": detail}, status_code=403)
        rec, token = await asyncio.to_thread(tokens.create, role, body.label)
        await admin.record(who, "tokens.create", [], request, outcome="ok", after={"id": rec.id})
        return {"id": rec.id, "role": rec.role, "label": rec.label, "token": token}

    @router.delete("/tokens/{token_id}")
    async def revoke_token(who: Admin, token_id: str) -> Any:
        """Revoke a token by id; not the caller's own (admin)."""
        request = {"id": token_id}
        if token_id == who.principal.token_id:
            detail = "this is the token you are using: revoke it with another admin token or the CLI"
            await admin.record(who, "tokens.revoke", [], request, outcome="refused", detail=detail)
            return JSONResponse({"detail": detail}, status_code=409)
        found = await asyncio.to_thread(tokens.revoke, token_id)
        if not found:
            return JSONResponse({"detail": f"no token with id {token_id}"}, status_code=404)
        await admin.record(who, "tokens.revoke", [], request, outcome="ok")
        return {"id": token_id, "revoked": True}

    return router
