"""Crash recovery: interrupted tasks are resolved on start-up by asking the agents what really exists."""

from __future__ import annotations

from typing import Any

import pytest

from controller import recovery
from controller.agentclient import AgentError
from controller.core import Core
from tests.conftest import Inventory


class FakeHost:
    """What one host's agent answers: its domains by UUID, and the verbs called."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.domains: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []

    def vm(self, uuid: str) -> dict[str, Any]:
        self.calls.append(("vm", uuid))
        if uuid not in self.domains:
            raise AgentError(self.name, f"no domain {uuid} on this host", 404, "not_found")
        return dict(self.domains[uuid], uuid=uuid, xml="<domain/>")

    def destroy_vm(self, uuid: str) -> dict[str, Any]:
        self.calls.append(("destroy", uuid))
        self.domains.pop(uuid, None)
        return {"uuid": uuid}


@pytest.fixture
def lab(core: Core, inv: Inventory, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    h1, h2 = inv.host("h1"), inv.host("h2")
    fakes = {h1["id"]: FakeHost("h1"), h2["id"]: FakeHost("h2")}
    monkeypatch.setattr(core, "agent", lambda host_id: fakes[host_id])
    monkeypatch.setattr(core.agents, "client", lambda host: fakes[host["id"]])
    return {"h1": h1, "h2": h2, "f1": fakes[h1["id"]], "f2": fakes[h2["id"]], "lan": inv.network("lan")}


def interrupted(core: Core, kind: str, vm: dict[str, Any]) -> str:
    """A task a killed controller left running."""
    task_id = core.tasks.create(kind, 1, vm["id"], vm["name"], vm["host_id"])
    with core.db.write() as w:
        w.execute("UPDATE tasks SET state = 'running' WHERE id = ?", [task_id])
    return task_id


def test_create_whose_domain_runs_is_finished(core: Core, inv: Inventory, lab: dict[str, Any]) -> None:
    vm = inv.vm("new", 1, lab["h1"], network=lab["lan"], ip="10.0.0.50", state="building")
    lab["f1"].domains[vm["id"]] = {"state": "running"}
    task_id = interrupted(core, "vm.create", vm)
    assert recovery.recover(core) == 1
    task = core.tasks.get(task_id)
    assert (task["state"], task["result"]["addresses"], task["result"]["host"]) == ("succeeded", ["10.0.0.50"], "h1")
    assert core.db.one("SELECT state FROM vms WHERE id = ?", [vm["id"]]) == {"state": "running"}


@pytest.mark.parametrize("left", [None, "shutoff"])
def test_create_without_a_running_domain_is_rolled_back(core: Core, inv: Inventory, lab: dict[str, Any],
                                                        left: str | None) -> None:
    vm = inv.vm("new", 1, lab["h1"], network=lab["lan"], ip="10.0.0.50", state="building")
    if left:
        lab["f1"].domains[vm["id"]] = {"state": left}  # defined, never started
    task_id = interrupted(core, "vm.create", vm)
    recovery.recover(core)
    task = core.tasks.get(task_id)
    assert task["state"] == "failed" and "rolled back" in task["error"] and "create the VM again" in task["error"]
    assert ("destroy", vm["id"]) in lab["f1"].calls and lab["f1"].domains == {}
    assert inv.count("vms") == 0 and inv.count("ip_allocations") == 0 and inv.count("vm_nics") == 0


def test_unreachable_host_keeps_the_vm_and_its_address_in_error(core: Core, inv: Inventory,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    host = inv.host("h1")  # its agent's port is closed
    vm = inv.vm("new", 1, host, network=inv.network("lan"), ip="10.0.0.50", state="building")
    task_id = interrupted(core, "vm.create", vm)
    recovery.recover(core)
    task = core.tasks.get(task_id)
    assert task["state"] == "failed" and "unreachable" in task["error"] and "destroy it" in task["error"]
    assert core.db.one("SELECT state FROM vms WHERE id = ?", [vm["id"]]) == {"state": "error"}
    assert inv.count("ip_allocations") == 1


def test_destroy_is_finished(core: Core, inv: Inventory, lab: dict[str, Any]) -> None:
    vm = inv.vm("old", 1, lab["h1"], network=lab["lan"], state="deleting")
    lab["f1"].domains[vm["id"]] = {"state": "running"}
    task_id = interrupted(core, "vm.destroy", vm)
    recovery.recover(core)
    assert core.tasks.get(task_id)["state"] == "succeeded"
    assert inv.count("vms") == 0 and inv.count("ip_allocations") == 0 and lab["f1"].domains == {}


def test_interrupted_migration_records_where_the_vm_is(core: Core, inv: Inventory, lab: dict[str, Any]) -> None:
    vm = inv.vm("moving", 1, lab["h1"])
    lab["f2"].domains[vm["id"]] = {"state": "running"}  # the migration finished; the controller died before noting it
    task_id = interrupted(core, "vm.migrate", vm)
    recovery.recover(core)
    assert core.tasks.get(task_id)["state"] == "failed"
    row = core.db.one("SELECT host_id, state FROM vms WHERE id = ?", [vm["id"]])
    assert row == {"host_id": lab["h2"]["id"], "state": "running"}


class _Recorder:
    """Stands in for the requests session: records the headers of each call, answers 200 {}."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []

    def request(self, _method: str, _url: str, **kwargs: Any) -> Any:
        self.headers.append(dict(kwargs["headers"]))

        class Resp:
            status_code = 200

            @staticmethod
            def json() -> dict[str, Any]:
                return {}

        return Resp()


def test_agent_calls_of_a_task_carry_its_operation_id(core: Core, wait: Any) -> None:
    from controller.agentclient import AgentClient

    session = _Recorder()
    client = AgentClient({"name": "h1", "address": "127.0.0.1", "agent_port": 1}, session)  # type: ignore[arg-type]
    task_id = core.tasks.create("test.op", 1)
    core.tasks.submit(task_id, lambda _ctx: (client.facts(), client.facts()) and None)
    assert wait(task_id)["state"] == "succeeded"
    client.facts()  # outside any task
    assert [h.get("X-Operation-Id") for h in session.headers] == [task_id, task_id, None]
