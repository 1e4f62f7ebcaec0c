"""Networks: definitions, IP pools, reservations and allocations."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from controller import events, ipam
from controller.api.common import body, core, require_admin, user
from controller.errors import BadRequest, NotFound

bp = Blueprint("api_networks", __name__)


def _find(ref: str) -> dict[str, Any]:
    """The network in the URL: unknown is 404 here (ipam.network_by_ref's 400 is for a name in a body)."""
    try:
        return ipam.network_by_ref(core().db, ref)
    except BadRequest:
        raise NotFound(f"network {ref!r} not found; list them with GET /api/v1/networks") from None


@bp.get("/networks")
def list_networks() -> Any:
    """List networks."""
    rows = core().db.all("SELECT * FROM networks ORDER BY name")
    return jsonify({"networks": [ipam.present_network(r) for r in rows]})


@bp.get("/networks/<ref>")
def get_network(ref: str) -> Any:
    """Show one network."""
    return jsonify({"network": ipam.present_network(_find(ref))})


@bp.post("/networks")
def create_network() -> Any:
    """Admin: create a network (an existing bridge, or a VLAN labcloud makes) with its IP pool."""
    u = require_admin()
    c = core()
    row = ipam.create_network(c.db, ipam.validate_network(body()))
    events.record(c.db, "network.create", "network", row["name"], "ok", row["cidr"], u["username"])
    return jsonify({"network": ipam.present_network(row)}), 201


@bp.delete("/networks/<ref>")
def delete_network(ref: str) -> Any:
    """Admin: delete a network no VM uses."""
    u = require_admin()
    c = core()
    net = _find(ref)
    ipam.delete_network(c.db, net)
    events.record(c.db, "network.delete", "network", net["name"], "ok", net["cidr"], u["username"])
    return jsonify({"deleted": net["name"]})


@bp.put("/networks/<ref>/reserved")
def set_reserved(ref: str) -> Any:
    """Admin: replace the addresses of a network that are never handed out."""
    u = require_admin()
    data = body()
    if "reserved" not in data:
        raise BadRequest("'reserved' is required: a list of addresses inside the network's CIDR")
    c = core()
    row = ipam.set_reserved(c.db, _find(ref), data["reserved"])
    events.record(c.db, "network.reserve", "network", row["name"], "ok", row["reserved"], u["username"])
    return jsonify({"network": ipam.present_network(row)})


@bp.get("/networks/<ref>/addresses")
def network_addresses(ref: str) -> Any:
    """List the addresses held in a network (members see only their own VMs' names)."""
    u = user()
    rows = ipam.allocations(core().db, _find(ref)["id"])
    if u["role"] != "admin":
        owners = {r["id"] for r in core().db.all("SELECT id FROM vms WHERE owner_id = ?", [u["id"]])}
        for r in rows:
            if r["vm_id"] not in owners:
                r["vm_id"], r["vm_name"] = None, None
    return jsonify({"addresses": rows})
