"""Placement: which host a new VM goes to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controller.db import Database
from controller.errors import Conflict

GIB = 1024**3


@dataclass(frozen=True)
class Need:
    """What a VM asks of a host."""

    vcpus: int
    memory_mib: int
    disk_gib: int


def host_usage(db: Database) -> dict[str, dict[str, float]]:
    """Return the vCPUs, RAM and disk allocated to VMs on each host."""
    rows = db.all(
        "SELECT host_id, SUM(vcpus) AS vcpus, SUM(memory_mib) AS memory_mib, SUM(disk_gib) AS disk_gib"
        " FROM vms WHERE host_id IS NOT NULL GROUP BY host_id"
    )
    return {r["host_id"]: r for r in rows}


def free_capacity(host: dict[str, Any], used: dict[str, float] | None) -> dict[str, float]:
    """Return what is left on a host after its allocation ratios and reservations."""
    used = used or {}
    return {
        "vcpus": host["vcpus"] * host["cpu_ratio"] - (used.get("vcpus") or 0),
        "memory_mib": (host["memory_mib"] - host["reserved_memory_mib"]) * host["ram_ratio"]
        - (used.get("memory_mib") or 0),
        # Overlays are thin; disk_free comes from the pool and already counts written data.
        "disk_gib": host["disk_free_gib"] * host["disk_ratio"],
    }


def fits(free: dict[str, float], need: Need) -> bool:
    """Say whether the need fits into the free capacity."""
    return free["vcpus"] >= need.vcpus and free["memory_mib"] >= need.memory_mib and free["disk_gib"] >= 1


def place(db: Database, need: Need, host_id: str | None = None, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Pick the up host with the most free RAM that fits, or check the requested one; never one in exclude.

    Call inside db.write() together with the VM insert so that concurrent creates
    see each other's reservations.
    """
    usage = host_usage(db)
    hosts = db.all("SELECT * FROM hosts ORDER BY name")
    if host_id is not None:
        hosts = [h for h in hosts if host_id in (h["id"], h["name"])]
        if not hosts:
            raise Conflict(f"host {host_id!r} is not known; list hosts with GET /api/v1/hosts", code="no_such_host")
        host = hosts[0]
        if host["state"] != "up":
            raise Conflict(f"host {host['name']} is {host['state']}; choose another host or omit 'host'")
        if not fits(free_capacity(host, usage.get(host["id"])), need):
            raise Conflict(f"host {host['name']} has no room for this flavor; choose another host or a smaller flavor")
        return host
    candidates = []
    for host in hosts:
        if host["state"] != "up" or host["id"] in exclude:
            continue
        free = free_capacity(host, usage.get(host["id"]))
        if fits(free, need):
            candidates.append((free["memory_mib"], host["name"], host))
    if not candidates:
        raise Conflict(
            f"no host has room for {need.vcpus} vCPU / {need.memory_mib} MiB; "
            "free capacity, choose a smaller flavor or add a host",
            code="no_capacity",
        )
    candidates.sort(key=lambda c: (-c[0], c[1]))
    return candidates[0][2]
