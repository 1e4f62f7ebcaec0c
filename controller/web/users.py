"""Users (admin only): list and create."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for

from controller import auth, events, views
from controller.errors import ApiError
from controller.web.common import db, require_admin, sentence

bp = Blueprint("users", __name__)


def _page(values: dict[str, str], errors: dict[str, str], status: int = 200) -> Any:
    return render_template("users.html", users=views.users(db()), values=values, errors=errors), status


@bp.get("/users")
def index() -> Any:
    """Admin: list users and offer the create form."""
    require_admin()
    return _page({"username": "", "role": "member"}, {})


@bp.post("/users")
def create() -> Any:
    """Admin: create a user with a role and an initial password."""
    admin = require_admin()
    values = {"username": request.form.get("username", "").strip(), "role": request.form.get("role", "member")}
    password = request.form.get("password", "")
    errors: dict[str, str] = {}
    too_short = "Choose a password of at least 8 characters."
    if not values["username"]:
        errors["username"] = "Enter a user name."
    if len(password) < 8:
        errors["password"] = too_short
    elif password != request.form.get("password2", ""):
        errors["password2"] = "The two passwords differ; type the same password twice."
    if values["role"] not in ("admin", "member"):
        errors["role"] = "Choose member or admin."
    if errors:
        return _page(values, errors, 400)
    try:
        auth.create_user(db(), values["username"], password, values["role"])
    except ApiError as exc:
        field = "username" if "exists" in exc.message else ""
        return _page(values, {field: sentence(exc.message)}, exc.status)
    events.record(db(), "user.create", "user", values["username"], "ok", f"role={values['role']}",
                  admin["username"], request.remote_addr)
    flash(f"Created {values['role']} {values['username']}. Give them the password through a safe channel.", "info")
    return redirect(url_for("web.users.index"))
