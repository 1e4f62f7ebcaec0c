"""The REST API under /api/v1: authentication, errors, and one blueprint per area."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, g, jsonify, request, session
from werkzeug.exceptions import HTTPException

from controller import auth, reqid
from controller.agentclient import AgentError
from controller.api.common import core
from controller.errors import ApiError, Unauthorized

# Endpoints reachable without a user: logging in and enrolling a host (token-authenticated).
PUBLIC_ENDPOINTS = {"api_auth.create_token", "api_hosts.join", "api_hosts.ca_certificate"}


def error_response(status: int, code: str, message: str, extra: dict[str, Any] | None = None) -> Any:
    """Return the API's error document (with extra fields such as an XML error's line)."""
    resp = jsonify({"error": {"code": code, "message": message, **(extra or {}), "request_id": reqid.get()}})
    resp.status_code = status
    return resp


def authenticate() -> None:
    """Find the user from a bearer token or the UI session; 401 when there is none."""
    if (request.endpoint or "").removeprefix("api.") in PUBLIC_ENDPOINTS:
        return
    header = request.headers.get("Authorization", "")
    c = core()
    if header.startswith("Bearer "):
        found = auth.user_for_token(c.db, header[7:].strip())
        if found is None:
            raise Unauthorized("invalid API token")
        g.user, g.via = found, "token"
        return
    if session.get("user_id"):
        found = c.db.one("SELECT * FROM users WHERE id = ?", [session["user_id"]])
        if found is not None:
            g.user, g.via = found, "session"
            return
    raise Unauthorized("authentication required: send 'Authorization: Bearer <token>' or log in")


def register(app: Flask) -> None:
    """Mount every API blueprint with authentication and JSON errors."""
    from controller.api import catalog, hosts, networks, tasks, tokens, unmanaged, vms, xml

    api = Blueprint("api", __name__, url_prefix="/api/v1")
    api.before_request(authenticate)  # a new parent per app: runs before every nested blueprint's views
    for bp in (tokens.bp, hosts.bp, vms.bp, xml.bp, catalog.bp, networks.bp, tasks.bp, unmanaged.bp):
        api.register_blueprint(bp)
    app.register_blueprint(api)

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Any:
        return error_response(exc.status, exc.code, exc.message, getattr(exc, "extra", None))

    @app.errorhandler(AgentError)
    def agent_error(exc: AgentError) -> Any:
        return error_response(502, exc.code or "agent_error", str(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if request.path.startswith("/api/"):
            return error_response(exc.code or 500, (exc.name or "error").lower().replace(" ", "_"),
                                  exc.description or "")
        return exc
