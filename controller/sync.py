"""Reconciles the inventory with the domains a host reports: states, missing VMs, unmanaged domains."""

from __future__ import annotations

import logging
from typing import Any

from controller import events
from controller.core import Core
from controller.db import now

log = logging.getLogger(__name__)

STATE_MAP = {"running": "running", "paused": "paused", "shutoff": "shutoff", "crashed": "crashed",
             "pmsuspended": "suspended", "shutdown": "running", "blocked": "running", "nostate": "unknown"}
# States the heartbeat owns. A task owns 'building' and 'deleting'; 'error' waits for an operator
# unless the host reports the domain again.
SETTLED = ("running", "shutoff", "paused", "unknown", "crashed", "suspended", "missing", "error")


def vm_state(libvirt_state: str) -> str:
    """Return the inventory state for a libvirt state word."""
    return STATE_MAP.get(libvirt_state, "unknown")


def reconcile(core: Core, host: dict[str, Any], domains: list[dict[str, Any]]) -> None:
    """Bring the host's VMs and its unmanaged domains in line with its report (joins the caller's write)."""
    db = core.db
    reported = {str(d.get("uuid")): d for d in domains if d.get("uuid")}
    stamp = now()
    with db.write() as w:
        mine = {vm["id"]: vm for vm in db.all("SELECT id, name, state FROM vms WHERE host_id = ?", [host["id"]])}
        for uuid, dom in reported.items():
            vm = mine.get(uuid)
            if vm is None or vm["state"] not in SETTLED:
                continue
            state = vm_state(str(dom.get("state", "")))
            if state == vm["state"]:
                continue
            w.execute("UPDATE vms SET state = ?, updated_at = ? WHERE id = ?", [state, stamp, uuid])
            if vm["state"] == "missing":
                events.record(db, "vm.found", "vm", uuid, "ok", f"{vm['name']} is back on {host['name']} ({state})")
        for uuid, vm in mine.items():
            if uuid in reported or vm["state"] in ("missing", "error") or vm["state"] not in SETTLED:
                continue
            if core.tasks.active_for_vm(uuid):  # a task may be defining or moving the domain right now
                continue
            w.execute("UPDATE vms SET state = 'missing', updated_at = ? WHERE id = ?", [stamp, uuid])
            events.record(db, "vm.missing", "vm", uuid, "failed",
                          f"the domain of {vm['name']} vanished from {host['name']} (was {vm['state']});"
                          " recreate or destroy the VM")
            log.warning("VM %s: its domain vanished from host %s", vm["name"], host["name"])
        _unmanaged(core, host, reported, stamp)


def _unmanaged(core: Core, host: dict[str, Any], reported: dict[str, dict[str, Any]], stamp: str) -> None:
    """Record the host's domains the inventory does not know; forget those gone or adopted."""
    db = core.db
    known = set()
    if reported:
        marks = ", ".join("?" * len(reported))
        known = {r["id"] for r in db.all(f"SELECT id FROM vms WHERE id IN ({marks})", list(reported))}  # noqa: S608
    with db.write() as w:
        for uuid, dom in reported.items():
            if uuid in known:
                continue
            w.execute(
                "INSERT INTO unmanaged_domains (uuid, host_id, name, state, first_seen, last_seen)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (uuid) DO UPDATE SET host_id = excluded.host_id,"
                " name = excluded.name, state = excluded.state, last_seen = excluded.last_seen",
                [uuid, host["id"], str(dom.get("name", "")), vm_state(str(dom.get("state", ""))), stamp, stamp],
            )
        stale = [r["uuid"] for r in db.all("SELECT uuid FROM unmanaged_domains WHERE host_id = ?", [host["id"]])
                 if r["uuid"] not in reported or r["uuid"] in known]
        for uuid in stale:
            w.execute("DELETE FROM unmanaged_domains WHERE uuid = ?", [uuid])
