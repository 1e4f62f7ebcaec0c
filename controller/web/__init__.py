"""The web UI: server-rendered pages behind a login session."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, flash, redirect, render_template, request, session, url_for

from controller import auth, events, scheduler
from controller.api.common import core
from controller.errors import ApiError
from controller.ops.vms import detail

bp = Blueprint("web", __name__)


def _user() -> dict[str, Any] | None:
    if not session.get("user_id"):
        return None
    return core().db.one("SELECT * FROM users WHERE id = ?", [session["user_id"]])


@bp.get("/login")
def login_form() -> Any:
    """Show the login form."""
    return render_template("login.html")


@bp.post("/login")
def login() -> Any:
    """Check the password and start a session."""
    c = core()
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    keys = (f"ip:{request.remote_addr}", f"user:{username}")
    try:
        c.throttle.check(*keys)
    except ApiError as exc:
        flash(exc.message)
        return render_template("login.html"), 429
    found = auth.verify_password(c.db, username, password)
    if found is None:
        c.throttle.failed(*keys)
        events.record(c.db, "auth.login", "user", username, "denied", "bad credentials", username, request.remote_addr)
        flash("Wrong username or password.")
        return render_template("login.html"), 401
    c.throttle.succeeded(*keys)
    session.clear()
    session["user_id"] = found["id"]
    events.record(c.db, "auth.login", "user", username, "ok", "", username, request.remote_addr)
    return redirect(url_for("web.index"))


@bp.post("/logout")
def logout() -> Any:
    """End the session."""
    session.clear()
    return redirect(url_for("web.login_form"))


@bp.get("/")
def index() -> Any:
    """List hosts and VMs."""
    user = _user()
    if user is None:
        return redirect(url_for("web.login_form"))
    c = core()
    usage = scheduler.host_usage(c.db)
    host_rows = c.db.all("SELECT * FROM hosts ORDER BY name")
    hosts = [dict(h, used=usage.get(h["id"]) or {}) for h in host_rows]
    if user["role"] == "admin":
        rows = c.db.all("SELECT * FROM vms ORDER BY name")
    else:
        rows = c.db.all("SELECT * FROM vms WHERE owner_id = ? ORDER BY name", [user["id"]])
    return render_template("index.html", user=user, hosts=hosts, vms=[detail(c, r) for r in rows])


@bp.get("/healthz")
def healthz() -> Any:
    """Say the controller answers (no data, no authentication needed)."""
    return {"ok": True}


def register(app: Flask) -> None:
    """Mount the UI."""
    app.register_blueprint(bp)

    @app.errorhandler(404)
    def not_found(_exc: Any) -> Any:
        if request.path.startswith("/api/"):
            from controller.api import error_response

            return error_response(404, "not_found", "no such endpoint")
        return render_template("error.html", message="Page not found."), 404

