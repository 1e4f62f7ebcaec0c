"""Host operations: maintenance mode, which drains the host's VMs by migration."""

from __future__ import annotations

import logging
from typing import Any

from controller import events
from controller.core import Core
from controller.db import now
from controller.errors import BadRequest, Conflict
from controller.ops.migrate import cancel_requested, run_migration
from controller.scheduler import Need, place
from controller.tasks import TaskContext, TaskFailed

log = logging.getLogger(__name__)


def set_maintenance(core: Core, host: dict[str, Any], body: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """Enter maintenance (new VMs stay away, a task drains the host) or leave it."""
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        raise BadRequest("'enabled' must be true or false")
    if not enabled:
        with core.db.write() as w:
            if host["state"] == "maintenance":
                w.execute("UPDATE hosts SET state = 'up' WHERE id = ?", [host["id"]])
            events.record(core.db, "host.maintenance", "host", host["id"], "ok", "left", user["username"])
        return {"host": host["name"], "maintenance": False, "task": None}
    if host["state"] == "down":
        raise Conflict(f"host {host['name']} is down; it cannot be drained by migration")
    with core.db.write() as w:
        if core.db.one("SELECT 1 FROM tasks WHERE kind = 'host.drain' AND host_id = ? AND state IN ('pending',"
                       " 'running')", [host["id"]]):
            raise Conflict(f"host {host['name']} is already being drained")
        w.execute("UPDATE hosts SET state = 'maintenance' WHERE id = ?", [host["id"]])
        task_id = core.tasks.create("host.drain", user["id"], host_id=host["id"])
        events.record(core.db, "host.maintenance", "host", host["id"], "ok", "entered", user["username"])

    def run(ctx: TaskContext) -> dict[str, Any]:
        vms = core.db.all("SELECT * FROM vms WHERE host_id = ? ORDER BY name", [host["id"]])
        moved: list[str] = []
        failed: list[str] = []
        for i, vm in enumerate(vms):
            if cancel_requested(core, ctx.task_id):
                raise TaskFailed(f"drain cancelled after {len(moved)} VM(s); the host stays in maintenance")
            span = (int(100 * i / len(vms)), int(100 * (i + 1) / len(vms)))
            try:
                with core.db.write():
                    dest = place(core.db, Need(vm["vcpus"], vm["memory_mib"], vm["disk_gib"]),
                                 exclude=(host["id"],))
                    core.db.db.execute("UPDATE tasks SET vm_id = ?, vm_name = ? WHERE id = ?",
                                       [vm["id"], vm["name"], ctx.task_id])
                ctx.progress(span[0], f"moving {vm['name']} to {dest['name']}")
                run_migration(core, vm, dest, {}, ctx, user, span)
                moved.append(vm["name"])
            except Exception as exc:
                log.warning("drain of %s: %s not moved: %s", host["name"], vm["name"], exc)
                failed.append(f"{vm['name']}: {getattr(exc, 'message', None) or exc}")
        with core.db.write() as w2:
            w2.execute("UPDATE tasks SET vm_id = NULL, vm_name = NULL WHERE id = ?", [ctx.task_id])
        if failed:
            raise TaskFailed(f"moved {len(moved)} VM(s); could not move {'; '.join(failed)}. The host stays in "
                             "maintenance: fix the cause and enable maintenance again to retry")
        return {"moved": moved, "at": now()}

    core.tasks.submit(task_id, run)
    return {"host": host["name"], "maintenance": True, "task": core.tasks.get(task_id)}


def evacuate(core: Core, host: dict[str, Any], body: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """Restart a down host's shared-storage VMs on other hosts, once the operator confirms it is fenced."""
    if body.get("confirm_fenced") is not True:
        raise BadRequest("evacuation starts the host's VMs elsewhere from their shared disks; if the host still ran "
                         "them, two copies would write one disk. Power the host off, then send "
                         '{"confirm_fenced": true}')
    if host["state"] != "down":
        raise Conflict(f"host {host['name']} is {host['state']}; only a down host is evacuated (migrate or use "
                       "maintenance for a live one)")
    with core.db.write():
        task_id = core.tasks.create("host.evacuate", user["id"], host_id=host["id"])
        events.record(core.db, "host.evacuate", "host", host["id"], "accepted", "operator confirmed fencing",
                      user["username"])

    def run(ctx: TaskContext) -> dict[str, Any]:
        vms = core.db.all("SELECT * FROM vms WHERE host_id = ? ORDER BY name", [host["id"]])
        moved: list[str] = []
        left: list[str] = []
        for i, vm in enumerate(vms):
            if vm["storage"] != "shared" or not vm["domain_xml"]:
                left.append(f"{vm['name']} (its disks are on {host['name']}'s local storage)")
                continue
            ctx.progress(int(100 * i / len(vms)), f"starting {vm['name']} elsewhere")
            try:
                with core.db.write():
                    dest = place(core.db, Need(vm["vcpus"], vm["memory_mib"], vm["disk_gib"]), exclude=(host["id"],))
                agent = core.agents.client(dest)
                agent.prepare_incoming(vm["id"], {"storage": "shared", "bridges": []})
                agent.define(vm["domain_xml"])
                out = agent.vm_action(vm["id"], "start")
                with core.db.write() as w:
                    w.execute("UPDATE vms SET host_id = ?, state = ?, updated_at = ? WHERE id = ?",
                              [dest["id"], out.get("state", "running"), now(), vm["id"]])
                events.record(core.db, "vm.evacuate", "vm", vm["id"], "ok", f"{host['name']} -> {dest['name']}",
                              user["username"])
                moved.append(vm["name"])
            except Exception as exc:
                left.append(f"{vm['name']} ({getattr(exc, 'message', None) or exc})")
        if left:
            raise TaskFailed(f"restarted {len(moved)} VM(s) elsewhere; not moved: {'; '.join(left)}")
        return {"moved": moved}

    core.tasks.submit(task_id, run)
    return core.tasks.get(task_id)


def remove_stale_copies(core: Core, host: dict[str, Any], uuids: list[str], force: bool) -> None:
    """Undefine domains a returning host still has of VMs that now run elsewhere (disks are kept).

    A stale copy that runs means fencing failed: two copies write one disk. It is forced
    off only on the heartbeat that brings the host back from down; otherwise left for
    the operator with an error event.
    """
    agent = core.agents.client(host)
    for uuid in uuids:
        try:
            state = agent.vm(uuid).get("state")
            if state not in ("shutoff", "crashed"):
                if not force:
                    events.record(core.db, "vm.stale_copy", "vm", uuid, "error",
                                  f"{host['name']} runs a copy of a VM inventoried on another host")
                    continue
                log.error("host %s ran stale copy %s of an evacuated VM (state %s): forcing it off",
                          host["name"], uuid, state)
                agent.vm_action(uuid, "poweroff")
            agent.undefine(uuid, delete_volumes=False)
            events.record(core.db, "vm.stale_copy_removed", "vm", uuid, "ok", f"on {host['name']}")
        except Exception as exc:
            log.warning("could not remove stale copy %s on %s: %s", uuid, host["name"], exc)
