"""IP address pools: validation of networks and allocation of addresses."""

from __future__ import annotations

import ipaddress
import json
import re
import sqlite3
from typing import Any

from controller.db import Database, now
from controller.errors import BadRequest, Conflict, NotFound

IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$")  # Linux IFNAMSIZ - 1
BRIDGE_RE = IFNAME_RE
NETWORK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
NETWORK_TYPES = ("bridge", "vlan")
MTU_RANGE = (68, 65535)  # IPv4's minimum to the largest a Linux device accepts
VLAN_RANGE = (1, 4094)   # 0 and 4095 are reserved by 802.1Q

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def validate_network(body: dict[str, Any]) -> dict[str, Any]:
    """Check a network definition; return the normalised row (raises BadRequest, changes nothing)."""
    for key in ("name", "bridge", "cidr", "range"):
        if not body.get(key):
            raise BadRequest(f"'{key}' is required")
    name = body["name"]
    if not isinstance(name, str) or not NETWORK_NAME_RE.match(name) or name.isdigit():
        raise BadRequest(f"name {name!r} must be 1-63 letters, digits, '.', '_' or '-' and not a number")
    kind = body.get("type", "bridge")
    if kind not in NETWORK_TYPES:
        raise BadRequest(f"type {kind!r} must be 'bridge' (an existing host bridge) or 'vlan' (labcloud makes it)")
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
    if not IFNAME_RE.match(str(body["bridge"])):
        raise BadRequest(
            f"bridge {body['bridge']!r} is not a Linux interface name (1-15 letters, digits, '.', '_', '-')"
        )
    vlan_id = _int_in(body.get("vlan_id"), "vlan_id", VLAN_RANGE)
    mtu = _int_in(body.get("mtu"), "mtu", MTU_RANGE)
    interface = body.get("interface")
    if interface is not None and (not isinstance(interface, str) or not IFNAME_RE.match(interface)):
        raise BadRequest(f"interface {interface!r} is not a Linux interface name (1-15 letters, digits, '.', '_', '-')")
    if kind == "vlan":
        if vlan_id is None:
            raise BadRequest("a network of type 'vlan' needs 'vlan_id' (1-4094)")
        if not interface:
            raise BadRequest("a network of type 'vlan' needs 'interface', the host's physical interface for the VLAN")
        if len(f"{interface}.{vlan_id}") > 15:
            raise BadRequest(f"the VLAN device {interface}.{vlan_id} would be longer than 15 characters; "
                             "use a shorter interface name")
    persistent = body.get("persistent", False)
    if not isinstance(persistent, bool):
        raise BadRequest("'persistent' must be true or false")
    dns = body.get("dns") or []
    if not isinstance(dns, list):
        raise BadRequest("'dns' must be a list of addresses")
    dns = [str(_address(d, "dns")) for d in dns]
    reserved = body.get("reserved") or []
    if not isinstance(reserved, list):
        raise BadRequest("'reserved' must be a list of addresses inside the CIDR")
    kept: list[str] = []
    for value in reserved:
        addr = _address(value, "reserved address")
        if addr not in net:
            raise BadRequest(f"reserved address {addr} is outside {net}; choose an address inside the CIDR")
        if str(addr) not in kept:
            kept.append(str(addr))
    return {
        "name": name,
        "type": kind,
        "bridge": str(body["bridge"]),
        "cidr": str(net),
        "gateway": str(gateway) if gateway else None,
        "dns": json.dumps(dns),
        "range_start": str(start),
        "range_end": str(end),
        "reserved": json.dumps(kept),
        "vlan_id": vlan_id,
        "interface": interface,
        "mtu": mtu,
        "persistent": int(persistent),
    }


def _int_in(value: Any, label: str, bounds: tuple[int, int]) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not bounds[0] <= value <= bounds[1]:
        raise BadRequest(f"{label} {value!r} must be an integer from {bounds[0]} to {bounds[1]}")
    return value


def _address(value: Any, label: str) -> IPAddress:
    try:
        return ipaddress.ip_address(str(value))
    except ValueError as exc:
        raise BadRequest(f"{label} {value!r} is not an IP address") from exc


def check_overlap(db: Database, row: dict[str, Any]) -> None:
    """Refuse (409) a CIDR that overlaps another network's on the same VLAN (untagged counts as one VLAN)."""
    net = ipaddress.ip_network(row["cidr"])
    for other in db.all("SELECT name, cidr, vlan_id FROM networks WHERE vlan_id IS ? AND name != ?",
                        [row["vlan_id"], row["name"]]):
        theirs = ipaddress.ip_network(other["cidr"])
        if theirs.version == net.version and theirs.overlaps(net):
            where = f"VLAN {row['vlan_id']}" if row["vlan_id"] is not None else "the untagged segment"
            raise Conflict(f"cidr {net} overlaps network {other['name']} ({theirs}) on {where}; "
                           "choose a CIDR that does not overlap or another VLAN")


def create_network(db: Database, row: dict[str, Any]) -> dict[str, Any]:
    """Insert a validated network in one transaction: unique name, no overlap on its VLAN."""
    with db.write() as w:
        if db.one("SELECT 1 FROM networks WHERE name = ?", [row["name"]]):
            raise Conflict(f"a network named {row['name']!r} exists already; choose another name")
        check_overlap(db, row)
        row = dict(row, created_at=now())
        cols = ", ".join(row)
        cur = w.execute(f"INSERT INTO networks ({cols}) VALUES ({', '.join('?' * len(row))})",  # noqa: S608
                        list(row.values()))
    return db.one("SELECT * FROM networks WHERE id = ?", [cur.lastrowid]) or {}


def delete_network(db: Database, network: dict[str, Any]) -> None:
    """Delete a network that no VM uses (409 naming the VMs otherwise)."""
    with db.write() as w:
        users = [r["name"] for r in db.all(
            "SELECT DISTINCT v.name FROM vm_nics n JOIN vms v ON v.id = n.vm_id WHERE n.network_id = ?"
            " ORDER BY v.name", [network["id"]])]
        if users:
            shown = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
            raise Conflict(f"network {network['name']} still has VMs ({shown}); "
                           "destroy them or move their NICs to another network first")
        w.execute("DELETE FROM ip_allocations WHERE network_id = ?", [network["id"]])
        w.execute("DELETE FROM networks WHERE id = ?", [network["id"]])


def set_reserved(db: Database, network: dict[str, Any], reserved: Any) -> dict[str, Any]:
    """Replace a network's reserved addresses; an address a VM holds cannot become reserved (409)."""
    row = validate_network(present_network(network) | {"reserved": reserved})
    with db.write() as w:
        held = {r["address"] for r in db.all("SELECT address FROM ip_allocations WHERE network_id = ?",
                                             [network["id"]])}
        clash = [a for a in json.loads(row["reserved"]) if a in held]
        if clash:
            raise Conflict(f"address {', '.join(clash)} is held by a VM on network {network['name']}; "
                           "release it before reserving it")
        w.execute("UPDATE networks SET reserved = ? WHERE id = ?", [row["reserved"], network["id"]])
    return db.one("SELECT * FROM networks WHERE id = ?", [network["id"]]) or {}


def present_network(row: dict[str, Any]) -> dict[str, Any]:
    """Return a network row as the API shows it (lists decoded, range as a pair, persistent a bool)."""
    out = dict(row)
    out["dns"] = json.loads(row["dns"])
    out["reserved"] = json.loads(row.get("reserved") or "[]")
    out["range"] = [row["range_start"], row["range_end"]]
    out["persistent"] = bool(row.get("persistent"))
    return out


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
    reserved = set(json.loads(network.get("reserved") or "[]"))
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
        if str(addr) in reserved:
            raise Conflict(f"ip {addr} is reserved on network {network['name']}; choose another or omit 'ip'")
        if str(addr) in taken:
            raise Conflict(f"ip {addr} is already in use on network {network['name']}; choose another or omit 'ip'")
        choice = str(addr)
    else:
        choice = ""
        for value in range(int(start), int(end) + 1):
            candidate = str(ipaddress.ip_address(value))
            if candidate not in taken and candidate not in reserved:
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
