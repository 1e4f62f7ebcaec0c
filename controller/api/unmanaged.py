"""Unmanaged domains: what hosts run outside the inventory, and adopting them (admins only)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from controller import views
from controller.api.common import body, core, require_admin
from controller.errors import NotFound
from controller.ops import adopt

bp = Blueprint("api_unmanaged", __name__)


@bp.get("/unmanaged")
def list_unmanaged() -> Any:
    """Admin: list domains on any host that the inventory does not know."""
    require_admin()
    return jsonify({"unmanaged": views.unmanaged(core().db)})


@bp.get("/hosts/<ref>/unmanaged")
def host_unmanaged(ref: str) -> Any:
    """Admin: list one host's domains that the inventory does not know."""
    require_admin()
    c = core()
    host = views.find_host(c.db, ref)
    if host is None:
        raise NotFound(f"host {ref!r} not found")
    return jsonify({"unmanaged": views.unmanaged(c.db, host["id"])})


@bp.post("/unmanaged/<uuid>/adopt")
def adopt_domain(uuid: str) -> Any:
    """Admin: take an unmanaged domain into the inventory as a VM; answers 202 with the task."""
    u = require_admin()
    return jsonify({"task": adopt.adopt(core(), uuid, body(), u)}), 202
