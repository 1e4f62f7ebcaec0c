"""Hosts: state, capacity and usage, the VMs on each, the maintenance switch."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for

from controller import views
from controller.errors import ApiError, NotFound
from controller.ops import adopt
from controller.web.common import core, current_user, db, require_admin, sentence

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


@bp.post("/hosts/<ref>/unmanaged/<uuid>/adopt")
def adopt_domain(ref: str, uuid: str) -> Any:
    """Adopt an unmanaged domain (admins) with the name and address typed in; the task shows on the VM's page."""
    user = require_admin()
    body: dict[str, Any] = {}
    if request.form.get("name", "").strip():
        body["name"] = request.form["name"].strip()
    if request.form.get("ip", "").strip():
        body["networks"] = [{"ip": request.form["ip"].strip()}]
    try:
        task = adopt.adopt(core(), uuid, body, user)
    except ApiError as exc:
        flash(f"Could not adopt: {sentence(exc.message)}", "error")
        return redirect(url_for("web.hosts.detail", ref=ref) + "#unmanaged-title")
    flash(f"Adopting: task started for {task['vm_name']}.", "info")
    return redirect(url_for("web.vms.detail", ref=task["vm_name"], task=task["id"]) + "#tasks")
