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
