"""API tokens: log in with a password to get one; revoke the one in use."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, jsonify, request

from controller import auth, events
from controller.api.common import body, core, user
from controller.errors import BadRequest, Unauthorized

bp = Blueprint("api_auth", __name__)


@bp.post("/tokens")
def create_token() -> Any:
    """Exchange a username and password for an API token (throttled)."""
    data = body()
    username, password = data.get("username"), data.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise BadRequest("'username' and 'password' are required")
    c = core()
    keys = (f"ip:{request.remote_addr}", f"user:{username}")
    c.throttle.check(*keys)
    found = auth.verify_password(c.db, username, password)
    if found is None:
        c.throttle.failed(*keys)
        events.record(c.db, "auth.token", "user", username, "denied", "bad credentials", username,
                      request.remote_addr)
        raise Unauthorized("wrong username or password")
    c.throttle.succeeded(*keys)
    token = auth.issue_token(c.db, found["id"], str(data.get("name") or "api"))
    events.record(c.db, "auth.token", "user", username, "ok", "", username, request.remote_addr)
    return jsonify({"token": token, "user": {"username": found["username"], "role": found["role"]}}), 201


@bp.delete("/tokens/current")
def revoke_current_token() -> Any:
    """Revoke the bearer token this request carries (`labcloud logout`)."""
    u = user()
    if g.get("via") != "token":
        raise BadRequest("only a bearer token can revoke itself: send it as 'Authorization: Bearer <token>'")
    auth.revoke_token(core().db, request.headers["Authorization"][7:].strip())
    events.record(core().db, "auth.token.revoke", "user", u["username"], "ok", "", u["username"],
                  request.remote_addr)
    return jsonify({"revoked": True})


@bp.get("/whoami")
def whoami() -> Any:
    """Return the caller's identity."""
    u = user()
    return jsonify({"username": u["username"], "role": u["role"]})
