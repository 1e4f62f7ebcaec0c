"""The web UI: server-rendered pages behind a login session, one blueprint per area.

Pages read the inventory through controller.views and change it only through the
operations (controller.ops) or, where no operation exists in the controller yet,
from the browser through the documented JSON API.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, g, redirect, render_template, request, session, url_for

from controller import reqid
from controller.api.common import core
from controller.errors import ApiError

# Reachable without a session: the login form, the health probe and the favicon.
PUBLIC = {"web.auth.login_form", "web.auth.login", "web.healthz", "web.favicon"}

# What a person can do about an error, by HTTP status.
ADVICE = {
    400: "Check what you entered and try again.",
    401: "Log in again.",
    403: "Ask an admin if you need this.",
    404: "It may have been deleted, or it belongs to another user. Go back to the list and pick it from there.",
    409: "Wait for the current task to finish, or change your request, then try again.",
    429: "Wait a minute, then try again.",
}


def session_user() -> dict[str, Any] | None:
    """Return the user of the session cookie, if any."""
    user_id = session.get("user_id")
    if not user_id:
        return None
    return core().db.one("SELECT id, username, role, created_at FROM users WHERE id = ?", [user_id])


def require_login() -> Any:
    """Load the session's user; send anyone without one to the login form."""
    g.user = session_user()
    if g.user is None and request.endpoint not in PUBLIC:
        return redirect(url_for("web.auth.login_form", next=request.full_path.rstrip("?")))
    return None


def error_page(status: int, message: str) -> Any:
    """Render the error page: what happened, what to do, the request id."""
    return render_template("error.html", status=status, message=message, advice=ADVICE.get(status, ""),
                           request_id=reqid.get()), status


def api_error(exc: ApiError) -> Any:
    """Show an operation's error (404 for other users' VMs) as a page."""
    return error_page(exc.status, exc.message)


def healthz() -> Any:
    """Say the controller answers (no data, no authentication needed)."""
    return {"ok": True}


def favicon() -> Any:
    """Point browsers that ask for /favicon.ico at the SVG icon."""
    return redirect(url_for("static", filename="favicon.svg"), code=301)


def register(app: Flask) -> None:
    """Mount the UI's blueprints, the page context and the HTML 404 page."""
    from controller.web import auth, catalog, dashboard, hosts, tasks, users, vm_create, vms

    bp = Blueprint("web", __name__)  # a new parent per app, like the API's: its hooks cover every child
    bp.before_request(require_login)
    bp.register_error_handler(ApiError, api_error)
    bp.add_url_rule("/healthz", view_func=healthz, methods=["GET"])
    bp.add_url_rule("/favicon.ico", view_func=favicon, methods=["GET"])
    for child in (auth.bp, dashboard.bp, hosts.bp, vms.bp, vm_create.bp, catalog.bp, tasks.bp, users.bp):
        bp.register_blueprint(child)
    app.register_blueprint(bp)

    @app.context_processor
    def page_context() -> dict[str, Any]:
        user = g.get("user")
        if user is None and not request.path.startswith("/api/") and "session" in request.cookies:
            user = session_user()
        return {"user": user}

    @app.errorhandler(404)
    def not_found(_exc: Any) -> Any:
        if request.path.startswith("/api/"):
            from controller.api import error_response

            return error_response(404, "not_found", "no such endpoint")
        return error_page(404, "There is no page at this address.")
