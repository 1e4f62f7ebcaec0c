"""IP address pools: validation of networks and allocation of addresses."""

from __future__ import annotations

import ipaddress
import json
import re
import sqlite3
from typing import Any

from controller.db import Database, now
from controller.errors import BadRequest, Conflict, NotFound

BRIDGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$")  # Linux IFNAMSIZ - 1


def validate_network(body: dict[str, Any]) -> dict[str, Any]:
    """Check a network definition; return the normalised row (raises BadRequest)."""
    for key in ("name", "bridge", "cidr", "range"):
        if not body.get(key):
            raise BadRequest(f"'{key}' is required")
    try:
        net = ipaddress.ip_network(str(body["cidr"]), strict=True)
    except ValueError as exc:
        raise BadRequest(f"cidr {body['cidr']!r} is not a network address: {exc}") from exc
    rng = body["range"]
    if not (isinstance(rng, list) and len(rng) == 2):
        raise BadRequest("'range' must be [first, last]")
    start, end = (_address(a, "range") for a in rng)
    gateway = _address(body["gateway"], "gateway") if body.get("gateway") else None
    for label, addr in (("range start", start), ("range end", end), ("gateway", gateway)):
        if addr is not None and addr not in net:
            raise BadRequest(f"{label} {addr} is outside {net}; choose an address inside the CIDR")
    if int(start) > int(end):
        raise BadRequest(f"range start {start} comes after range end {end}")
    if not BRIDGE_RE.match(str(body["bridge"])):
        raise BadRequest(
            f"bridge {body['bridge']!r} is not a Linux interface name (1-15 letters, digits, '.', '_', '-')"
        )
    vlan_id = body.get("vlan_id")
    if vlan_id is not None and (not isinstance(vlan_id, int) or isinstance(vlan_id, bool) or not 1 <= vlan_id <= 4094):
        raise BadRequest(f"vlan_id {vlan_id!r} must be an integer from 1 to 4094")
    dns = body.get("dns") or []
    if not isinstance(dns, list):
        raise BadRequest("'dns' must be a list of addresses")
    dns = [str(_address(d, "dns")) for d in dns]
    return {
        "name": str(body["name"]),
        "bridge": str(body["bridge"]),
        "cidr": str(net),
        "gateway": str(gateway) if gateway else None,
        "dns": json.dumps(dns),
        "range_start": str(start),
        "range_end": str(end),
        "vlan_id": body.get("vlan_id"),
        "interface": body.get("interface"),
    }


def _address(value: Any, label: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(str(value))
    except ValueError as exc:
        raise BadRequest(f"{label} {value!r} is not an IP address") from exc


def network_by_ref(db: Database, ref: Any) -> dict[str, Any]:
    """Find a network by id or name."""
    row = db.one("SELECT * FROM networks WHERE name = ? OR CAST(id AS TEXT) = ?", [str(ref), str(ref)])
    if row is None:
        raise BadRequest(f"unknown network {ref!r}; list them with GET /api/v1/networks")
    return row


def allocate(db: Database, network: dict[str, Any], vm_id: str, requested: str | None = None) -> str:
    """Hold one address of the network for a VM: the requested one or the lowest free one.

    Must run inside db.write(): the UNIQUE (network_id, address) constraint plus the
    write lock make it impossible to hand out an address twice.
    """
    net = ipaddress.ip_network(network["cidr"])
    start = ipaddress.ip_address(network["range_start"])
    end = ipaddress.ip_address(network["range_end"])
    taken = {r["address"] for r in db.all("SELECT address FROM ip_allocations WHERE network_id = ?", [network["id"]])}
    if network.get("gateway"):
        taken.add(network["gateway"])
    if net.num_addresses > 2:  # /31 and /32 have no network or broadcast address to skip
        taken |= {str(net.network_address), str(net.broadcast_address)}
    if requested is not None:
        addr = _address(requested, "ip")
        if addr not in net:
            raise BadRequest(f"ip {addr} is outside network {network['name']} ({net})")
        if addr in (net.network_address, net.broadcast_address):
            raise BadRequest(f"ip {addr} is the network or broadcast address of {net}")
        if str(addr) in taken:
            raise Conflict(f"ip {addr} is already in use on network {network['name']}; choose another or omit 'ip'")
        choice = str(addr)
    else:
        choice = ""
        for value in range(int(start), int(end) + 1):
            candidate = str(ipaddress.ip_address(value))
            if candidate not in taken:
                choice = candidate
                break
        if not choice:
            raise Conflict(f"network {network['name']} has no free address in {start}-{end}")
    try:
        db.db.execute(
            "INSERT INTO ip_allocations (network_id, address, vm_id, allocated_at) VALUES (?, ?, ?, ?)",
            [network["id"], choice, vm_id, now()],
        )
    except sqlite3.IntegrityError as exc:
        raise Conflict(f"ip {choice} was taken meanwhile on network {network['name']}; retry") from exc
    return choice


def release_vm(db: Database, vm_id: str) -> int:
    """Release every address held by a VM; return how many."""
    with db.write() as w:
        cur = w.execute("DELETE FROM ip_allocations WHERE vm_id = ?", [vm_id])
        return int(cur.rowcount)


def allocations(db: Database, network_id: int) -> list[dict[str, Any]]:
    """Return the addresses held in a network with the VM holding each."""
    if not db.one("SELECT id FROM networks WHERE id = ?", [network_id]):
        raise NotFound(f"network {network_id} not found")
    return db.all(
        "SELECT a.address, a.vm_id, v.name AS vm_name, a.allocated_at FROM ip_allocations a"
        " LEFT JOIN vms v ON v.id = a.vm_id WHERE a.network_id = ? ORDER BY a.id",
        [network_id],
    )
