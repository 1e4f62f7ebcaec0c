"""Crash recovery: on start-up, resolve each task a previous controller left unfinished by asking the agents.

A create whose domain exists and runs is finished (succeeded); any other create is rolled back
(domain undefined, volumes deleted, addresses released) and failed. A destroy is finished. An
adoption is finished when the domain carries labcloud's metadata, else forgotten. Anything else is
failed with its VM's state left to the next heartbeat. When a host cannot be asked, the VM keeps its
addresses in state 'error' and the task says what to do.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from controller import events
from controller.agentclient import AgentError
from controller.core import Core
from controller.db import now
from controller.sync import vm_state
from controller.tasks import INTERRUPTED

log = logging.getLogger(__name__)
ROLLED_BACK = ("the controller stopped during this create; it was rolled back (no domain, disk or address is left);"
               " create the VM again")


def recover(core: Core) -> int:
    """Resolve every pending or running task; return how many were resolved."""
    tasks = core.db.all("SELECT * FROM tasks WHERE state IN ('pending', 'running') ORDER BY created_at")
    for task in tasks:
        vm = core.db.one("SELECT * FROM vms WHERE id = ?", [task["vm_id"]]) if task["vm_id"] else None
        try:
            state, error, result = _resolve(core, task, vm)
        except AgentError as exc:
            state, error, result = "failed", _unreachable(core, task, vm, exc), None
        _finish(core, task["id"], state, error, result)
        log.warning("interrupted task %s (%s) resolved: %s %s", task["id"], task["kind"], state, error or "")
    # Whatever else a dead task left half-done waits for an operator (heartbeats correct the rest).
    with core.db.write() as w:
        w.execute("UPDATE vms SET state = 'error', updated_at = ? WHERE state IN ('building', 'deleting')",
                  [now()])
    return len(tasks)


Outcome = tuple[str, str | None, dict[str, Any] | None]


def _resolve(core: Core, task: dict[str, Any], vm: dict[str, Any] | None) -> Outcome:
    if task["kind"] == "vm.create":
        return _create(core, task, vm)
    if task["kind"] == "vm.destroy" and vm is not None:
        core.agent(vm["host_id"]).destroy_vm(vm["id"])
        with core.db.write() as w:
            w.execute("DELETE FROM vms WHERE id = ?", [vm["id"]])
        events.record(core.db, "vm.destroy", "vm", vm["id"], "ok", "finished after a controller restart")
        return "succeeded", None, {"vm_id": vm["id"]}
    if task["kind"] == "vm.adopt" and vm is not None:
        found = core.agent(vm["host_id"]).vm(vm["id"])
        if (found.get("labcloud") or {}).get("vm_id") == vm["id"]:
            _set_state(core, vm["id"], found)
            return "succeeded", None, {"vm_id": vm["id"]}
        with core.db.write() as w:
            w.execute("DELETE FROM vms WHERE id = ?", [vm["id"]])  # the domain is unmanaged again
        return "failed", "the controller stopped during this adoption; nothing was kept: adopt the domain again", None
    if vm is not None and vm["state"] not in ("building", "deleting"):
        _locate(core, vm)  # a lifecycle action or a migration: record where and how the VM is now
    return "failed", INTERRUPTED, None


def _locate(core: Core, vm: dict[str, Any]) -> None:
    """Find the host that has the VM's domain (a migration may have moved it) and record it there."""
    hosts = core.db.all("SELECT * FROM hosts WHERE state != 'down' ORDER BY id = ? DESC", [vm["host_id"]])
    found: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for host in hosts:
        try:
            found.append((host, core.agents.client(host).vm(vm["id"])))
        except AgentError:
            continue
    if not found:
        return
    host, dom = next(((h, d) for h, d in found if d.get("state") == "running"), found[0])
    _set_state(core, vm["id"], dom)
    if host["id"] != vm["host_id"]:
        with core.db.write() as w:
            w.execute("UPDATE vms SET host_id = ? WHERE id = ?", [host["id"], vm["id"]])
        events.record(core.db, "vm.migrate", "vm", vm["id"], "ok", f"found on {host['name']} after a restart")


def _create(core: Core, task: dict[str, Any], vm: dict[str, Any] | None) -> Outcome:
    if vm is None:
        return "failed", "the controller stopped before this create reserved anything; create the VM again", None
    agent = core.agent(vm["host_id"])
    try:
        found: dict[str, Any] | None = agent.vm(vm["id"])
    except AgentError as exc:
        if exc.status != 404:
            raise
        found = None
    if found is not None and found.get("state") == "running":
        _set_state(core, vm["id"], found)
        events.record(core.db, "vm.create", "vm", vm["id"], "ok", "found running after a controller restart")
        addresses = [r["address"] for r in core.db.all("SELECT address FROM vm_nics WHERE vm_id = ? ORDER BY idx",
                                                        [vm["id"]])]
        host = core.db.one("SELECT name FROM hosts WHERE id = ?", [vm["host_id"]]) or {}
        return "succeeded", None, {"vm_id": vm["id"], "host": host.get("name"), "addresses": addresses}
    agent.destroy_vm(vm["id"])  # idempotent: whatever part of the domain and disks exists goes
    with core.db.write() as w:
        w.execute("DELETE FROM vms WHERE id = ?", [vm["id"]])  # cascades to NICs and addresses
    events.record(core.db, "vm.create", "vm", vm["id"], "failed", "rolled back after a controller restart")
    return "failed", ROLLED_BACK, None


def _unreachable(core: Core, task: dict[str, Any], vm: dict[str, Any] | None, exc: AgentError) -> str:
    if vm is not None:
        with core.db.write() as w:
            w.execute("UPDATE vms SET state = 'error', updated_at = ? WHERE id = ?", [now(), vm["id"]])
    return (f"the controller stopped during this task and {exc} when asked what exists; the VM keeps its"
            " addresses in state error: destroy it (or retry) once its host is back")


def _set_state(core: Core, vm_id: str, found: dict[str, Any]) -> None:
    with core.db.write() as w:
        w.execute("UPDATE vms SET state = ?, domain_xml = COALESCE(?, domain_xml), updated_at = ? WHERE id = ?",
                  [vm_state(str(found.get("state", ""))), found.get("xml"), now(), vm_id])


def _finish(core: Core, task_id: str, state: str, error: str | None, result: dict[str, Any] | None) -> None:
    with core.db.write() as w:
        w.execute(
            "UPDATE tasks SET state = ?, error = ?, result = ?, finished_at = ?,"
            " progress = CASE WHEN ? = 'succeeded' THEN 100 ELSE progress END,"
            " message = CASE WHEN ? = 'succeeded' THEN 'done (resolved after a restart)'"
            " ELSE 'failed (resolved after a restart)' END WHERE id = ?",
            [state, error, json.dumps(result) if result is not None else None, now(), state, state, task_id],
        )
