"""Shared pieces of the API: the current user, JSON bodies, the Core."""

from __future__ import annotations

from typing import Any, cast

from flask import current_app, g, request

from controller.core import Core
from controller.errors import BadRequest, Forbidden


def core() -> Core:
    """Return the Core attached to the running app."""
    return cast(Core, current_app.extensions["labcloud"])


def user() -> dict[str, Any]:
    """Return the authenticated user of this request."""
    return cast(dict[str, Any], g.user)


def require_admin() -> dict[str, Any]:
    """Return the user, or refuse with 403 unless an admin."""
    u = user()
    if u["role"] != "admin":
        raise Forbidden("this needs the admin role")
    return u


def body() -> dict[str, Any]:
    """Return the request's JSON object body (empty when none was sent)."""
    if not request.data:
        return {}
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data
