"""Read-only queries behind the web pages: counts, host usage, VM lists, tasks, pools.

Nothing here writes. Members see only their own VMs and tasks, exactly as in the API.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from controller import scheduler
from controller.db import Database
from controller.tasks import public

VM_STATES = ("building", "running", "paused", "suspended", "shutoff", "crashed", "deleting", "error", "unknown",
             "missing")
ACTIVE_TASK_STATES = ("pending", "running")


def is_admin(user: dict[str, Any]) -> bool:
    """Say whether the user has the admin role."""
    return bool(user["role"] == "admin")


def _like(text: str) -> str:
    """Return a LIKE pattern matching text anywhere, with LIKE's wildcards escaped."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def vm_summaries(db: Database, user: dict[str, Any] | None, search: str = "", state: str = "",
                 host: str = "", vm_id: str = "") -> list[dict[str, Any]]:
    """Return the VMs the user may see (None: any), filtered, with host, owner, image, flavor and NICs (2 queries)."""
    sql = (
        "SELECT v.id, v.name, v.state, v.vcpus, v.memory_mib, v.disk_gib, v.hostname, v.storage, v.created_at,"
        " v.updated_at, v.host_id, h.name AS host_name, h.state AS host_state, u.username AS owner,"
        " i.name AS image, f.name AS flavor FROM vms v LEFT JOIN hosts h ON h.id = v.host_id"
        " LEFT JOIN users u ON u.id = v.owner_id LEFT JOIN images i ON i.id = v.image_id"
        " LEFT JOIN flavors f ON f.id = v.flavor_id WHERE 1 = 1"
    )
    params: list[Any] = []
    if user is not None and not is_admin(user):
        sql += " AND v.owner_id = ?"
        params.append(user["id"])
    if vm_id:
        sql += " AND v.id = ?"
        params.append(vm_id)
    if state:
        sql += " AND v.state = ?"
        params.append(state)
    if host:
        sql += " AND (h.name = ? OR h.id = ?)"
        params += [host, host]
    if search:
        pattern = _like(search.strip())
        sql += (" AND (v.name LIKE ? ESCAPE '\\' OR v.hostname LIKE ? ESCAPE '\\' OR u.username LIKE ? ESCAPE '\\'"
                " OR v.id LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM vm_nics n WHERE n.vm_id = v.id"
                " AND n.address LIKE ? ESCAPE '\\'))")
        params += [pattern] * 5
    rows = db.all(sql + " ORDER BY v.name", params)
    nics = _nics_by_vm(db, [r["id"] for r in rows])
    for row in rows:
        row["nics"] = nics.get(row["id"], [])
        row["ips"] = [n["address"] for n in row["nics"]]
    return rows


def _nics_by_vm(db: Database, vm_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    if not vm_ids:
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for nic in db.all("SELECT n.vm_id, n.idx, n.mac, n.address, w.name AS network, n.is_default FROM vm_nics n"
                      " JOIN networks w ON w.id = n.network_id"
                      " WHERE n.vm_id IN (SELECT value FROM json_each(?)) ORDER BY n.vm_id, n.idx",
                      [json.dumps(vm_ids)]):
        nic["default"] = bool(nic.pop("is_default"))
        out.setdefault(nic.pop("vm_id"), []).append(nic)
    return out


def vm_state_counts(db: Database, user: dict[str, Any]) -> dict[str, int]:
    """Return {state: number of VMs} for the VMs the user may see."""
    if is_admin(user):
        rows = db.all("SELECT state, COUNT(*) AS n FROM vms GROUP BY state")
    else:
        rows = db.all("SELECT state, COUNT(*) AS n FROM vms WHERE owner_id = ? GROUP BY state", [user["id"]])
    return {r["state"]: int(r["n"]) for r in rows}


def _percent(used: float, total: float) -> int:
    if total <= 0:
        return 0
    return max(0, min(100, round(100 * used / total)))


def host_overview(db: Database, user: dict[str, Any]) -> list[dict[str, Any]]:
    """Return every host with allocated and total CPU, RAM and disk, and the user's VMs on it."""
    usage = scheduler.host_usage(db)
    vms = vm_summaries(db, user)
    out = []
    for host in db.all("SELECT * FROM hosts ORDER BY name"):
        used = usage.get(host["id"]) or {}
        cpu_total = host["vcpus"] * host["cpu_ratio"]
        ram_total = max(0.0, (host["memory_mib"] - host["reserved_memory_mib"]) * host["ram_ratio"])
        disk_used = max(0.0, host["disk_total_gib"] - host["disk_free_gib"])
        row = {k: v for k, v in host.items() if k not in ("facts", "cert_fingerprint")}
        row.update(
            cpu_used=float(used.get("vcpus") or 0), cpu_total=cpu_total,
            ram_used=float(used.get("memory_mib") or 0), ram_total=ram_total,
            disk_used=disk_used,
            free=scheduler.free_capacity(host, used),
            vms=[v for v in vms if v["host_id"] == host["id"]],
        )
        row["cpu_pct"] = _percent(row["cpu_used"], cpu_total)
        row["ram_pct"] = _percent(row["ram_used"], ram_total)
        row["disk_pct"] = _percent(disk_used, host["disk_total_gib"])
        out.append(row)
    return out


def find_host(db: Database, ref: str) -> dict[str, Any] | None:
    """Return a host row by UUID or name."""
    return db.one("SELECT * FROM hosts WHERE id = ? OR name = ?", [ref, ref])


def recent_tasks(db: Database, user: dict[str, Any], limit: int = 20, vm_id: str | None = None,
                 state: str | None = None) -> list[dict[str, Any]]:
    """Return tasks the user may see, newest first, with the user's name."""
    sql = "SELECT t.*, u.username FROM tasks t LEFT JOIN users u ON u.id = t.user_id WHERE 1 = 1"
    params: list[Any] = []
    if not is_admin(user):
        sql += " AND t.user_id = ?"
        params.append(user["id"])
    if vm_id is not None:
        sql += " AND t.vm_id = ?"
        params.append(vm_id)
    if state:
        sql += " AND t.state = ?"
        params.append(state)
    rows = db.all(sql + " ORDER BY t.created_at DESC, t.rowid DESC LIMIT ?", [*params, limit])
    return [public(r) for r in rows]


def task_for_user(db: Database, task_id: str, user: dict[str, Any]) -> dict[str, Any] | None:
    """Return one task if the user may see it."""
    row = db.one("SELECT t.*, u.username FROM tasks t LEFT JOIN users u ON u.id = t.user_id WHERE t.id = ?",
                 [task_id])
    if row is None or (not is_admin(user) and row["user_id"] != user["id"]):
        return None
    return public(row)


def images(db: Database) -> list[dict[str, Any]]:
    """Return images, by name."""
    return db.all("SELECT * FROM images ORDER BY name")


def flavors(db: Database) -> list[dict[str, Any]]:
    """Return flavors, smallest RAM first."""
    return db.all("SELECT * FROM flavors ORDER BY memory_mib, name")


def _pool_size(net: dict[str, Any]) -> int:
    start = int(ipaddress.ip_address(net["range_start"]))
    end = int(ipaddress.ip_address(net["range_end"]))
    size = end - start + 1
    if net.get("gateway") and start <= int(ipaddress.ip_address(net["gateway"])) <= end:
        size -= 1
    return max(0, size)


def networks(db: Database) -> list[dict[str, Any]]:
    """Return networks with their DNS list, pool size and number of addresses in use."""
    used = {r["network_id"]: int(r["n"]) for r in
            db.all("SELECT network_id, COUNT(*) AS n FROM ip_allocations GROUP BY network_id")}
    out = []
    for row in db.all("SELECT * FROM networks ORDER BY name"):
        net = dict(row, dns=json.loads(row["dns"]), reserved=json.loads(row.get("reserved") or "[]"),
                   used=used.get(row["id"], 0), size=_pool_size(row))
        net["pct"] = _percent(net["used"], net["size"])
        out.append(net)
    return out


def find_network(db: Database, ref: str) -> dict[str, Any] | None:
    """Return a network row by numeric id or name."""
    return db.one("SELECT * FROM networks WHERE name = ? OR CAST(id AS TEXT) = ?", [ref, ref])


def network_allocations(db: Database, network_id: int, user: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the addresses held in a network; members see only their own VMs' names."""
    rows = db.all(
        "SELECT a.address, a.vm_id, v.name AS vm_name, v.owner_id, a.allocated_at FROM ip_allocations a"
        " LEFT JOIN vms v ON v.id = a.vm_id WHERE a.network_id = ? ORDER BY a.id", [network_id])
    for row in rows:
        row["visible"] = is_admin(user) or row["owner_id"] == user["id"]
    return rows


def users(db: Database) -> list[dict[str, Any]]:
    """Return users (without password hashes) with how many VMs and API tokens each has."""
    return db.all(
        "SELECT u.id, u.username, u.role, u.created_at,"
        " (SELECT COUNT(*) FROM vms v WHERE v.owner_id = u.id) AS vm_count,"
        " (SELECT COUNT(*) FROM api_tokens t WHERE t.user_id = u.id) AS token_count"
        " FROM users u ORDER BY u.username")


def vm_addresses(db: Database, vm_id: str) -> list[dict[str, Any]]:
    """Return the addresses a VM holds, with their networks."""
    return db.all("SELECT a.address, w.name AS network FROM ip_allocations a JOIN networks w"
                  " ON w.id = a.network_id WHERE a.vm_id = ? ORDER BY a.id", [vm_id])


def unmanaged(db: Database, host_id: str = "") -> list[dict[str, Any]]:
    """Return the domains hosts run outside the inventory (of one host, or all), with the host's name."""
    sql = ("SELECT u.uuid, u.name, u.state, u.host_id, h.name AS host, u.first_seen, u.last_seen"
           " FROM unmanaged_domains u JOIN hosts h ON h.id = u.host_id")
    if host_id:
        return db.all(sql + " WHERE u.host_id = ? ORDER BY u.name", [host_id])
    return db.all(sql + " ORDER BY h.name, u.name")
