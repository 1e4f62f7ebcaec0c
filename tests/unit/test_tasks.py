"""Persisted tasks, recovery after a restart, heartbeats and down detection, rollback of a failed create."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from flask.testing import FlaskClient

from controller import hosts, recovery, reqid
from controller.core import Core
from controller.errors import Conflict
from controller.tasks import INTERRUPTED, TaskContext, TaskFailed
from tests.conftest import Inventory

GIB = 1024**3


def test_task_that_raises_taskfailed_ends_failed_and_runs_on_failure(core: Core, wait: Any) -> None:
    cleaned = threading.Event()

    def work(ctx: TaskContext) -> dict[str, Any]:
        ctx.progress(40, "copying disks")
        raise TaskFailed("the disk copy stopped: host h2 is out of space; free space and retry")

    task_id = core.tasks.create("test.fail", 1)
    core.tasks.submit(task_id, work, on_failure=cleaned.set)
    task = wait(task_id)
    assert task["state"] == "failed"
    assert task["error"] == "the disk copy stopped: host h2 is out of space; free space and retry"
    assert task["progress"] == 40  # where it stopped, not 100
    assert task["result"] is None and task["started_at"] and task["finished_at"]
    assert cleaned.is_set()


def test_progress_is_recorded_while_running_and_result_at_the_end(core: Core, wait: Any) -> None:
    reached, release = threading.Event(), threading.Event()

    def work(ctx: TaskContext) -> dict[str, Any]:
        ctx.progress(42, "halfway there")
        reached.set()
        release.wait(10)
        ctx.progress(250, "clamped")
        return {"answer": 42}

    task_id = core.tasks.create("test.progress", 1)
    assert core.tasks.get(task_id)["state"] == "pending"
    core.tasks.submit(task_id, work)
    assert reached.wait(10)
    running = core.tasks.get(task_id)
    assert (running["state"], running["progress"], running["message"]) == ("running", 42, "halfway there")
    release.set()
    task = wait(task_id)
    assert (task["state"], task["progress"], task["message"]) == ("succeeded", 100, "done")
    assert task["result"] == {"answer": 42} and task["error"] is None


def test_crash_is_an_internal_error_and_cleanup_failure_does_not_hide_it(core: Core, wait: Any) -> None:
    def work(_ctx: TaskContext) -> None:
        raise KeyError("vcpus")

    def cleanup() -> None:
        raise RuntimeError("cleanup broke too")

    task_id = core.tasks.create("test.crash", 1)
    core.tasks.submit(task_id, work, on_failure=cleanup)
    task = wait(task_id)
    assert task["state"] == "failed"
    assert task["error"] == "internal error: 'vcpus'"


def test_api_error_in_a_task_keeps_its_message(core: Core, wait: Any) -> None:
    def work(_ctx: TaskContext) -> None:
        raise Conflict("host h1 is no longer in the inventory")

    task_id = core.tasks.create("test.conflict", 1)
    core.tasks.submit(task_id, work)
    assert wait(task_id)["error"] == "host h1 is no longer in the inventory"


def test_task_carries_the_request_id(core: Core, wait: Any) -> None:
    seen: list[str] = []
    reqid.set("req-tasktest01")
    try:
        task_id = core.tasks.create("test.reqid", 1)
        core.tasks.submit(task_id, lambda _ctx: seen.append(reqid.get()) and None)
    finally:
        reqid.set("-")
    task = wait(task_id)
    assert task["request_id"] == "req-tasktest01"
    assert seen == ["req-tasktest01"]  # log lines of the task's thread carry it too


def test_task_api_shows_state_progress_error_result(client: FlaskClient, core: Core, auth: dict[str, str],
                                                    wait: Any) -> None:
    task_id = core.tasks.create("test.api", 1)
    core.tasks.submit(task_id, lambda _ctx: {"vm_id": "abc"})
    wait(task_id)
    task = client.get(f"/api/v1/tasks/{task_id}", headers=auth).get_json()["task"]
    assert {"id", "kind", "state", "progress", "error", "result", "request_id", "created_at"} <= set(task)
    assert (task["state"], task["progress"], task["result"]) == ("succeeded", 100, {"vm_id": "abc"})
    listed = client.get("/api/v1/tasks", headers=auth).get_json()["tasks"]
    assert [t["id"] for t in listed] == [task_id]


def test_recovery_with_an_unreachable_host_fails_tasks_and_flags_vms(core: Core, inv: Inventory) -> None:
    host = inv.host("h1")
    building = inv.vm("new", 1, host, state="building")
    deleting = inv.vm("old", 1, host, state="deleting")
    running = inv.vm("fine", 1, host, state="running")
    pending = core.tasks.create("vm.create", 1, building["id"], "new")
    started = core.tasks.create("vm.destroy", 1, deleting["id"], "old")
    done = core.tasks.create("vm.start", 1, running["id"], "fine")
    with core.db.write() as w:
        w.execute("UPDATE tasks SET state = 'running' WHERE id = ?", [started])
        w.execute("UPDATE tasks SET state = 'succeeded' WHERE id = ?", [done])
    assert recovery.recover(core) == 2  # the host's agent does not answer: nothing can be checked
    for task_id in (pending, started):
        task = core.tasks.get(task_id)
        assert task["state"] == "failed" and "controller stopped" in task["error"] and task["finished_at"]
        assert "unreachable" in task["error"] and "destroy it" in task["error"]
    assert "controller stopped" in INTERRUPTED and "retry" in INTERRUPTED
    assert core.tasks.get(done)["state"] == "succeeded"
    states = {r["name"]: r["state"] for r in core.db.all("SELECT name, state FROM vms")}
    assert states == {"new": "error", "old": "error", "fine": "running"}
    assert recovery.recover(core) == 0


def test_restart_recovers_interrupted_tasks(config: Any, core: Core) -> None:
    """Core.start on an inventory with an unfinished task fails it."""
    task_id = core.tasks.create("image.import", 1)
    second = Core.start(config)
    try:
        assert second.tasks.get(task_id)["error"] == INTERRUPTED
    finally:
        second.close()
        second.db.close()


def test_heartbeat_sets_host_up_and_vm_states(core: Core, inv: Inventory) -> None:
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).isoformat(timespec="seconds")
    host = inv.host("h1", state="down", last_seen=old, vcpus=0, memory_mib=0)
    reported = inv.vm("seen", 1, host, state="unknown")
    paused = inv.vm("paused", 1, host, state="running")
    inv.vm("gone", 1, host, state="running")
    building = inv.vm("new", 1, host, state="building")
    body = {"facts": {"vcpus": 16, "memory_mib": 32768, "pool_free_bytes": 100 * GIB, "pool_capacity_bytes": 400 * GIB},
            "domains": [{"uuid": reported["id"], "state": "running"}, {"uuid": paused["id"], "state": "pmsuspended"},
                        {"uuid": building["id"], "state": "shutoff"}]}
    assert hosts.heartbeat(core, host, body)["ok"] is True
    row = core.db.one("SELECT * FROM hosts WHERE id = ?", [host["id"]]) or {}
    assert (row["state"], row["vcpus"], row["memory_mib"]) == ("up", 16, 32768)
    assert (row["disk_free_gib"], row["disk_total_gib"]) == (100.0, 400.0)
    assert row["last_seen"] > old
    states = {r["name"]: r["state"] for r in core.db.all("SELECT name, state FROM vms")}
    assert states == {"seen": "running", "paused": "suspended", "gone": "missing", "new": "building"}
    assert core.db.one("SELECT 1 FROM events WHERE action = 'host.up' AND object_id = ?", [host["id"]])


def test_heartbeat_keeps_maintenance(core: Core, inv: Inventory) -> None:
    host = inv.host("h1", state="maintenance")
    hosts.heartbeat(core, host, {"facts": {"vcpus": 4}, "domains": []})
    assert core.db.one("SELECT state FROM hosts WHERE id = ?", [host["id"]]) == {"state": "maintenance"}


def test_silent_host_is_marked_down_and_its_vms_unknown(core: Core, inv: Inventory) -> None:
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)).isoformat(timespec="seconds")
    silent = inv.host("h1", last_seen=old)
    alive = inv.host("h2")
    inv.vm("a", 1, silent, state="running")
    inv.vm("b", 1, silent, state="building")
    inv.vm("c", 1, alive, state="running")
    assert hosts.mark_silent_hosts_down(core) == 1
    states = {r["name"]: r["state"] for r in core.db.all("SELECT name, state FROM hosts")}
    assert states == {"h1": "down", "h2": "up"}
    vms = {r["name"]: r["state"] for r in core.db.all("SELECT name, state FROM vms")}
    assert vms == {"a": "unknown", "b": "building", "c": "running"}
    event = core.db.one("SELECT * FROM events WHERE action = 'host.down'") or {}
    assert event["object_id"] == silent["id"] and "silent" in event["detail"]
    assert hosts.mark_silent_hosts_down(core) == 0  # already down: no second event


# --- VM tasks against an agent that does not answer ---------------------------------------------


def cloud(inv: Inventory) -> dict[str, Any]:
    """One up host whose agent is unreachable, an image, a flavor, a network."""
    return {"host": inv.host("h1"), "image": inv.image("debian"), "flavor": inv.flavor("small"),
            "network": inv.network("lan")}


def test_create_with_unreachable_agent_fails_and_rolls_back(client: FlaskClient, core: Core, inv: Inventory,
                                                            auth: dict[str, str], wait: Any) -> None:
    cloud(inv)
    resp = client.post("/api/v1/vms", headers=auth, json={
        "name": "web1", "image": "debian", "flavor": "small", "networks": [{"network": "lan", "ip": "10.0.0.33"}]})
    assert resp.status_code == 202, resp.get_json()
    accepted = resp.get_json()["task"]
    assert accepted["kind"] == "vm.create" and accepted["state"] in ("pending", "running", "failed")
    assert accepted["request_id"] == resp.headers["X-Request-Id"]
    task = wait(accepted["id"])
    assert task["state"] == "failed"
    assert "h1" in task["error"] and "unreachable" in task["error"], task["error"]
    # Nothing is held: the VM row, its NIC and its address are gone, and the address is free again.
    assert inv.count("vms") == inv.count("vm_nics") == inv.count("ip_allocations") == 0
    results = [r["result"] for r in core.db.all("SELECT result FROM events WHERE action = 'vm.create'")]
    assert results == ["accepted", "failed"]
    assert client.get("/api/v1/vms/web1", headers=auth).status_code == 404


def test_unreachable_agent_is_an_operator_error_not_an_internal_error(client: FlaskClient, inv: Inventory,
                                                                      auth: dict[str, str], wait: Any) -> None:
    """'agent unreachable; is it running?' is for the operator; it is not a controller bug."""
    cloud(inv)
    resp = client.post("/api/v1/vms", headers=auth, json={
        "name": "web1", "image": "debian", "flavor": "small", "networks": [{"network": "lan"}]})
    task = wait(resp.get_json()["task"]["id"])
    assert task["error"].startswith("host h1: agent unreachable"), task["error"]


def test_destroy_with_unreachable_agent_keeps_the_vm_and_its_address(client: FlaskClient, inv: Inventory,
                                                                     auth: dict[str, str], wait: Any) -> None:
    c = cloud(inv)
    vm = inv.vm("web1", 1, c["host"], network=c["network"], ip="10.0.0.40")
    resp = client.delete("/api/v1/vms/web1", headers=auth)
    assert resp.status_code == 202
    task = wait(resp.get_json()["task"]["id"])
    assert task["state"] == "failed" and "h1" in task["error"]
    # The domain may still exist on the host: keep the row (flagged) and the address it uses.
    assert inv.db.one("SELECT state FROM vms WHERE id = ?", [vm["id"]]) == {"state": "error"}
    assert [r["address"] for r in inv.db.all("SELECT address FROM ip_allocations")] == ["10.0.0.40"]


def test_lifecycle_with_unreachable_agent_fails_and_leaves_the_state(client: FlaskClient, inv: Inventory,
                                                                     auth: dict[str, str], wait: Any) -> None:
    c = cloud(inv)
    vm = inv.vm("web1", 1, c["host"], state="shutoff")
    resp = client.post("/api/v1/vms/web1/start", headers=auth)
    assert resp.status_code == 202
    task = wait(resp.get_json()["task"]["id"])
    assert (task["kind"], task["state"], task["vm_id"]) == ("vm.start", "failed", vm["id"])
    assert "h1" in task["error"]
    assert inv.db.one("SELECT state FROM vms WHERE id = ?", [vm["id"]]) == {"state": "shutoff"}
    # The failed task no longer blocks the VM.
    again = client.post("/api/v1/vms/web1/start", headers=auth)
    assert again.status_code == 202
    wait(again.get_json()["task"]["id"])


def test_guest_info_with_unreachable_agent_names_the_host(client: FlaskClient, inv: Inventory,
                                                          auth: dict[str, str]) -> None:
    """A synchronous agent call that fails says which host did not answer (502), not a bare 500."""
    c = cloud(inv)
    inv.vm("web1", 1, c["host"])
    resp = client.get("/api/v1/vms/web1/guest", headers=auth)
    assert resp.status_code == 502, resp.get_json()
    err = resp.get_json()["error"]
    assert "h1" in err["message"] and "unreachable" in err["message"], err
