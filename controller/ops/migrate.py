"""Migration of a VM to another host: live (shared or copied storage) or offline.

Whatever fails, the VM ends on exactly one host and the inventory names it: the
task asks both agents what really runs before it records anything.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from controller import events, reqid
from controller.agentclient import AgentClient, AgentError
from controller.core import Core
from controller.db import now
from controller.errors import BadRequest, Conflict
from controller.ops.vms import _reserve_task
from controller.scheduler import Need, place
from controller.tasks import TaskContext, TaskFailed

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 600
def _facts(host: dict[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = json.loads(host.get("facts") or "{}")
    return facts


def check(core: Core, vm: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Validate a migration request; return the destination host (raises 400/409)."""
    live = body.get("live", True)
    if not isinstance(live, bool):
        raise BadRequest("'live' must be true or false")
    timeout = body.get("timeout", DEFAULT_TIMEOUT_S)
    if not isinstance(timeout, int | float) or not 5 <= timeout <= 86400:
        raise BadRequest("'timeout' must be a number of seconds between 5 and 86400")
    bandwidth = body.get("bandwidth_mib")
    if bandwidth is not None and (not isinstance(bandwidth, int) or bandwidth < 1):
        raise BadRequest("'bandwidth_mib' must be a positive integer (MiB/s)")
    if vm["state"] not in ("running", "shutoff"):
        raise Conflict(f"VM {vm['name']} is {vm['state']}; only running (live) or stopped (offline) VMs migrate")
    source = core.db.one("SELECT * FROM hosts WHERE id = ?", [vm["host_id"]])
    if source is None or source["state"] == "down":
        raise Conflict(f"the VM's host is {source['state'] if source else 'unknown'}; evacuate it instead")
    need = Need(vm["vcpus"], vm["memory_mib"], vm["disk_gib"])
    requested = body.get("host")
    if requested is not None and not isinstance(requested, str):
        raise BadRequest("'host' must be a host name or id")
    if requested in (source["id"], source["name"]):
        raise Conflict(f"VM {vm['name']} already runs on {source['name']}; choose another host")
    if requested is None and not core.db.one("SELECT 1 FROM hosts WHERE state = 'up' AND id != ?", [source["id"]]):
        raise Conflict("no other host is up and out of maintenance; add a host or end maintenance")
    dest = place(core.db, need, requested, exclude=(source["id"],))
    if vm["storage"] == "shared" and not (_facts(source).get("shared_pool") and _facts(dest).get("shared_pool")):
        raise Conflict(f"{dest['name']} has no shared storage pool; the VM's disks are on shared storage")
    return dest


def migrate(core: Core, vm: dict[str, Any], body: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """Check and start a migration task."""
    dest = check(core, vm, body)
    task_id = _reserve_task(core, vm, "vm.migrate", user)
    events.record(core.db, "vm.migrate", "vm", vm["id"], "accepted", f"to {dest['name']}", user["username"])

    def run(ctx: TaskContext) -> dict[str, Any]:
        return run_migration(core, vm, dest, body, ctx, user)

    core.tasks.submit(task_id, run)
    return core.tasks.get(task_id)


def cancel_requested(core: Core, task_id: str) -> bool:
    """Say whether someone asked to cancel the task."""
    row = core.db.one("SELECT cancel_requested FROM tasks WHERE id = ?", [task_id])
    return bool(row and row["cancel_requested"])


def run_migration(core: Core, vm: dict[str, Any], dest: dict[str, Any], body: dict[str, Any], ctx: TaskContext,
                  user: dict[str, Any], span: tuple[int, int] = (0, 100)) -> dict[str, Any]:
    """Move one VM to dest (live when it runs, offline when stopped); used by migrate and drain."""
    lo, hi = span

    def progress(pct: float, message: str) -> None:
        ctx.progress(int(lo + (hi - lo) * pct / 100), message)

    source = core.db.one("SELECT * FROM hosts WHERE id = ?", [vm["host_id"]])
    assert source is not None
    src, dst = core.agents.client(source), core.agents.client(dest)
    image = core.db.one("SELECT * FROM images WHERE id = ?", [vm["image_id"]])
    storage = vm["storage"]
    nets = core.db.all("SELECT DISTINCT w.bridge, w.type, w.vlan_id, w.interface, w.mtu, w.persistent FROM vm_nics n"
                       " JOIN networks w ON w.id = n.network_id WHERE n.vm_id = ?", [vm["id"]])
    state = src.vm(vm["id"]).get("state")
    live = state == "running"
    progress(5, f"preparing {dest['name']}")
    spec: dict[str, Any] = {"storage": storage, "bridges": [n["bridge"] for n in nets], "disk_gib": vm["disk_gib"],
                            "vlans": [dict(n) for n in nets if n["type"] == "vlan"]}
    if storage == "local":
        if image is None:
            raise TaskFailed("the VM's image is no longer in the inventory; its disk cannot be rebuilt elsewhere")
        url = f"{core.config.agent_url}/agent/v1/images/{image['sha256']}"
        dst.ensure_image_in("local", image["sha256"], image["size_bytes"], url)
        spec.update(image_sha256=image["sha256"], seed=src.seed(vm["id"], storage))
    try:
        dst.prepare_incoming(vm["id"], spec)
        if live:
            _live(core, vm, source, dest, src, dst, body, ctx, progress)
        else:
            _offline(vm, storage, src, dst, progress)
    except (AgentError, TaskFailed) as exc:
        where = _where_is(vm["id"], src, dst)
        if where == "dest":
            log.warning("migration reported %s but the VM runs on %s; recording that", exc, dest["name"])
        else:
            try:
                dst.abort_incoming(vm["id"], storage)
            except AgentError as cleanup:
                log.warning("could not clean %s yet after a failed migration (%s); retrying in the background",
                            dest["name"], cleanup)
                _clean_later(dst, vm["id"], storage)
            events.record(core.db, "vm.migrate", "vm", vm["id"], "failed", str(exc), user["username"])
            raise
    if storage == "local":
        try:
            src.cleanup_source(vm["id"])
        except AgentError as exc:  # the VM moved; stale disks on the source are only wasted space
            log.warning("disks of %s left on %s: %s", vm["name"], source["name"], exc)
    final = dst.vm(vm["id"])
    with core.db.write() as w:
        w.execute("UPDATE vms SET host_id = ?, state = ?, domain_xml = ?, updated_at = ? WHERE id = ?",
                  [dest["id"], final.get("state", "unknown"), final.get("xml"), now(), vm["id"]])
    events.record(core.db, "vm.migrate", "vm", vm["id"], "ok", f"{source['name']} -> {dest['name']}",
                  user["username"])
    progress(100, f"on {dest['name']}")
    return {"vm_id": vm["id"], "from": source["name"], "to": dest["name"], "live": live}


def _state_on(agent: AgentClient, uuid: str) -> str | None:
    """Return the domain's state on a host, 'absent', or None when the host cannot say."""
    try:
        return str(agent.vm(uuid).get("state"))
    except AgentError as exc:
        return "absent" if exc.status == 404 else None


def _where_is(uuid: str, src: AgentClient, dst: AgentClient) -> str:
    """Return 'dest' only if the destination runs the domain and the source does not; else 'source'.

    An incoming copy on the destination is paused until the migration finishes, so only
    a running domain there means the migration completed.
    """
    on_source, on_dest = _state_on(src, uuid), _state_on(dst, uuid)
    return "dest" if on_dest == "running" and on_source != "running" else "source"


CLEANUP_RETRY_S = 5.0
CLEANUP_RETRIES = 36  # three minutes: long enough for a destination's libvirtd to come back


def _clean_later(dst: AgentClient, uuid: str, storage: str) -> None:
    """Keep asking the destination to drop a failed incoming copy until it can (bounded)."""
    request_id = reqid.get()

    def run() -> None:
        reqid.set(request_id)
        for _ in range(CLEANUP_RETRIES):
            time.sleep(CLEANUP_RETRY_S)
            try:
                dst.abort_incoming(uuid, storage)
            except AgentError as exc:
                if exc.status == 409 and exc.code == "running":
                    log.error("%s runs %s after a failed migration; left for the operator", dst.name, uuid)
                    return
                continue
            log.info("removed the failed incoming copy of %s from %s", uuid, dst.name)
            return
        log.error("gave up removing the failed incoming copy of %s from %s", uuid, dst.name)

    threading.Thread(target=run, name=f"clean-{uuid[:8]}", daemon=True).start()


def _live(core: Core, vm: dict[str, Any], source: dict[str, Any], dest: dict[str, Any], src: AgentClient,
          dst: AgentClient, body: dict[str, Any], ctx: TaskContext, progress: Any) -> None:
    facts = _facts(source)
    shared = vm["storage"] == "shared"
    timeout = float(body.get("timeout", DEFAULT_TIMEOUT_S))
    if not facts.get("migration_tls"):
        log.warning("LAB MODE: migrating %s over plain TCP between libvirt daemons", vm["name"])
    src.start_migration(vm["id"], {
        "dest_address": dest["address"], "copy_storage": not shared,
        "unsafe": shared and bool(facts.get("shared_pool_unsafe")), "bandwidth_mib": body.get("bandwidth_mib"),
    })
    started = time.monotonic()
    cancelled = False
    while True:
        status = src.migration(vm["id"])
        if status["state"] != "running":
            break
        pct = status.get("percent", 0)
        mib_left = status.get("data_remaining", 0) / 2**20
        speed = status.get("bandwidth_bps", 0) / 2**20
        progress(10 + 0.85 * pct, f"migrating to {dest['name']}: {pct}% ({mib_left:.0f} MiB left, {speed:.1f} MiB/s)")
        if not cancelled and cancel_requested(core, ctx.task_id):
            src.cancel_migration(vm["id"])
            cancelled = True
        elif not cancelled and time.monotonic() - started > timeout:
            src.cancel_migration(vm["id"])
            cancelled = True
            body = dict(body, _timed_out=True)
        time.sleep(0.5)
    if status["state"] == "succeeded":
        return
    if body.get("_timed_out"):
        raise TaskFailed(f"the migration did not converge within {timeout:.0f} s and was aborted; the VM still runs "
                         f"on {source['name']}. Retry when the guest is less busy, or raise 'timeout'")
    if status["state"] == "cancelled" or cancelled:
        raise TaskFailed(f"the migration was cancelled; the VM still runs on {source['name']}")
    raise TaskFailed(f"libvirt: {status.get('error')}. The VM still runs on {source['name']}; check that "
                     f"{dest['name']}'s libvirtd is running and reachable, then retry")


def _offline(vm: dict[str, Any], storage: str, src: AgentClient, dst: AgentClient, progress: Any) -> None:
    xml = src.vm(vm["id"])["xml"]
    if storage == "local":
        name = f"{vm['id']}-root.qcow2"
        progress(20, "copying the root disk")
        resp = src.read_volume(name)
        size = int(resp.headers.get("Content-Length", "0"))
        dst.write_volume(name, size, resp.iter_content(1 << 20))
    progress(80, "defining the VM on the destination")
    dst.define(xml)
    src.undefine(vm["id"], delete_volumes=storage == "local")


def cancel(core: Core, task_id: str, user: dict[str, Any]) -> dict[str, Any]:
    """Ask a running migration task to stop."""
    task = core.tasks.get(task_id)
    if user["role"] != "admin" and task["user_id"] != user["id"]:
        raise Conflict("not your task")
    if task["kind"] not in ("vm.migrate", "host.drain") or task["state"] not in ("pending", "running"):
        raise Conflict(f"task {task_id} is a {task['kind']} in state {task['state']}; only running migrations cancel")
    with core.db.write() as w:
        w.execute("UPDATE tasks SET cancel_requested = 1 WHERE id = ?", [task_id])
    return core.tasks.get(task_id)
