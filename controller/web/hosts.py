"""Hosts: state, capacity and usage, the VMs on each, the maintenance switch."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from controller import views
from controller.errors import NotFound
from controller.web.common import current_user, db

bp = Blueprint("hosts", __name__)


@bp.get("/hosts")
def index() -> Any:
    """List hosts with capacity bars and their VMs."""
    return render_template("hosts.html", hosts=views.host_overview(db(), current_user()))


@bp.get("/hosts/<ref>")
def detail(ref: str) -> Any:
    """Show one host: state, capacity, allocation ratios, VMs, recent tasks."""
    user, d = current_user(), db()
    found = views.find_host(d, ref)
    if found is None:
        raise NotFound(f"host {ref!r} not found")
    host = next(h for h in views.host_overview(d, user) if h["id"] == found["id"])
    unmanaged = views.unmanaged(d, found["id"]) if user["role"] == "admin" else []
    return render_template("host.html", host=host, unmanaged=unmanaged)
