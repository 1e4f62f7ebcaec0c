"""What every page shares: the logged-in user, role checks, the Core, safe redirects."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import urlsplit

from flask import g

from controller.api.common import core
from controller.core import Core
from controller.db import Database
from controller.errors import Forbidden

__all__ = ["core", "current_user", "db", "require_admin", "safe_next", "sentence"]


def current_user() -> dict[str, Any]:
    """Return the logged-in user of this request (set by the web blueprint's before_request)."""
    return cast(dict[str, Any], g.user)


def db() -> Database:
    """Return the inventory database."""
    c: Core = core()
    return c.db


def require_admin() -> dict[str, Any]:
    """Return the user, or refuse with 403 unless an admin."""
    user = current_user()
    if user["role"] != "admin":
        raise Forbidden("this page needs the admin role; ask an admin")
    return user


def safe_next(target: str | None, default: str) -> str:
    """Return target if it is a path on this site (no scheme, no host), else default."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def sentence(message: str) -> str:
    """Return an operation's message as a sentence: capital first letter, final period."""
    message = message.strip()
    if not message:
        return message
    if message.startswith("ip "):  # the API's field name, an acronym in a sentence
        message = "IP" + message[2:]
    return message[0].upper() + message[1:] + ("" if message.endswith((".", "?", "!")) else ".")
