"""Logging in and out of the UI."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, g, redirect, render_template, request, session, url_for

from controller import auth, events
from controller.errors import ApiError
from controller.web.common import core, safe_next

bp = Blueprint("auth", __name__)


@bp.get("/login")
def login_form() -> Any:
    """Show the login form (or go on if already logged in)."""
    target = safe_next(request.args.get("next"), url_for("web.dashboard.index"))
    if g.user is not None:
        return redirect(target)
    return render_template("login.html", next=target)


@bp.post("/login")
def login() -> Any:
    """Check the password (throttled) and start a session."""
    c = core()
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    target = safe_next(request.form.get("next"), url_for("web.dashboard.index"))
    keys = (f"ip:{request.remote_addr}", f"user:{username}")
    try:
        c.throttle.check(*keys)
    except ApiError as exc:
        return render_template("login.html", error=exc.message[:1].upper() + exc.message[1:] + ".",
                               username=username, next=target), 429
    found = auth.verify_password(c.db, username, password)
    if found is None:
        c.throttle.failed(*keys)
        events.record(c.db, "auth.login", "user", username, "denied", "bad credentials", username, request.remote_addr)
        return render_template("login.html", error="Wrong username or password. Check both and try again.",
                               username=username, next=target), 401
    c.throttle.succeeded(*keys)
    session.clear()
    session["user_id"] = found["id"]
    events.record(c.db, "auth.login", "user", username, "ok", "", username, request.remote_addr)
    return redirect(target)


@bp.post("/logout")
def logout() -> Any:
    """End the session."""
    session.clear()
    return redirect(url_for("web.auth.login_form"))
