"""Hosts: join tokens, enrolment, list and detail, capacity settings."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from controller import hosts, scheduler
from controller.api.common import body, core, require_admin
from controller.errors import BadRequest, NotFound
from controller.ops import hosts as host_ops

bp = Blueprint("api_hosts", __name__)
SETTABLE = {"cpu_ratio": float, "ram_ratio": float, "disk_ratio": float, "reserved_memory_mib": int}


def _public(row: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    used = usage.get(row["id"]) or {}
    free = scheduler.free_capacity(row, used)
    keep = ("id", "name", "address", "state", "vcpus", "memory_mib", "disk_free_gib", "disk_total_gib",
            "reserved_memory_mib", "cpu_ratio", "ram_ratio", "disk_ratio", "last_seen", "joined_at")
    out = {k: row[k] for k in keep}
    out["usage"] = {"vcpus": used.get("vcpus") or 0, "memory_mib": used.get("memory_mib") or 0}
    out["free"] = free
    return out


def _find(ref: str) -> dict[str, Any]:
    row = core().db.one("SELECT * FROM hosts WHERE id = ? OR name = ?", [ref, ref])
    if row is None:
        raise NotFound(f"host {ref!r} not found")
    return row


@bp.post("/hosts/join-tokens")
def join_token() -> Any:
    """Admin: make a one-time token to enrol a host."""
    return jsonify(hosts.new_join_token(core(), require_admin())), 201


@bp.post("/hosts/join")
def join() -> Any:
    """Agent: enrol with a join token and a CSR (authenticated by the token)."""
    return jsonify(hosts.join(core(), body(), request.remote_addr)), 201


@bp.get("/pki/ca.pem")
def ca_certificate() -> Any:
    """Return the CA certificate (public; agents pin its fingerprint from the join token)."""
    return Response(core().ca.pem, mimetype="application/x-pem-file")


@bp.get("/hosts")
def list_hosts() -> Any:
    """List hosts with state, capacity and usage."""
    c = core()
    usage = scheduler.host_usage(c.db)
    return jsonify({"hosts": [_public(h, usage) for h in c.db.all("SELECT * FROM hosts ORDER BY name")]})


@bp.get("/hosts/<ref>")
def get_host(ref: str) -> Any:
    """Show one host."""
    c = core()
    return jsonify({"host": _public(_find(ref), scheduler.host_usage(c.db))})


@bp.post("/hosts/<ref>/maintenance")
def maintenance(ref: str) -> Any:
    """Admin: {"enabled": true} keeps new VMs away and drains the host by migration; false ends it."""
    u = require_admin()
    out = host_ops.set_maintenance(core(), _find(ref), body(), u)
    return jsonify(out), 202 if out["task"] else 200


@bp.post("/hosts/<ref>/evacuate")
def evacuate(ref: str) -> Any:
    """Admin: restart a down, fenced host's shared-storage VMs elsewhere ({"confirm_fenced": true})."""
    u = require_admin()
    return jsonify({"task": host_ops.evacuate(core(), _find(ref), body(), u)}), 202


@bp.patch("/hosts/<ref>")
def update_host(ref: str) -> Any:
    """Admin: change a host's allocation ratios or reserved memory."""
    require_admin()
    host = _find(ref)
    data = body()
    unknown = set(data) - set(SETTABLE)
    if unknown or not data:
        raise BadRequest(f"settable fields are {', '.join(sorted(SETTABLE))}")
    c = core()
    with c.db.write() as w:
        for key, kind in SETTABLE.items():
            if key in data:
                value = data[key]
                if not isinstance(value, int | float) or value < 0:
                    raise BadRequest(f"'{key}' must be a non-negative number")
                w.execute(f"UPDATE hosts SET {key} = ? WHERE id = ?", [kind(value), host["id"]])  # noqa: S608
    return get_host(host["id"])
