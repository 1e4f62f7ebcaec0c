"""Adopting unmanaged domains through the API, against a fake agent (the real one runs in tests/lab)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient

from controller.agentclient import AgentError
from controller.core import Core
from tests.conftest import Inventory, assert_error
from tests.unit.test_sync import beat, dom

SHA = "ab" * 32


class FakeAgent:
    """Answers the two adoption verbs as an agent would for one domain."""

    def __init__(self, facts: dict[str, Any]) -> None:
        self.facts = facts
        self.adopted: list[tuple[str, str, str]] = []
        self.fail: str | None = None

    def inspect_domain(self, uuid_: str) -> dict[str, Any]:
        return dict(self.facts, uuid=uuid_)

    def adopt_domain(self, uuid_: str, vm_id: str, owner: str) -> dict[str, Any]:
        if self.fail:
            raise AgentError("h1", self.fail)
        self.adopted.append((uuid_, vm_id, owner))
        return {"uuid": uuid_, "state": "shutoff", "xml": "<domain/>"}


@pytest.fixture
def world(core: Core, inv: Inventory, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    host = inv.host("h1")
    image = inv.image("debian12")
    with core.db.write() as w:
        w.execute("UPDATE images SET sha256 = ? WHERE id = ?", [SHA, image["id"]])
    inv.flavor("small", 1, 512, 4)
    lan = inv.network("lan")
    domain = str(uuid.uuid4())
    beat(core, host, dom(domain, "shutoff", "ByHand"))
    agent = FakeAgent({"name": "ByHand", "state": "shutoff", "vcpus": 1, "memory_mib": 512, "disk_gib": 4,
                       "image_sha256": SHA, "nics": [{"mac": "52:54:00:aa:bb:cc", "type": "bridge", "bridge": "br0"}],
                       "guest_addresses": {}, "disks": [], "problems": []})
    monkeypatch.setattr(core, "agent", lambda _host_id: agent)
    return {"host": host, "lan": lan, "uuid": domain, "agent": agent}


def test_adopt_registers_the_vm_its_nic_and_address(client: FlaskClient, core: Core, world: dict[str, Any],
                                                     auth: dict[str, str], wait: Any) -> None:
    resp = client.post(f"/api/v1/unmanaged/{world['uuid']}/adopt", headers=auth,
                       json={"name": "byhand", "networks": [{"ip": "10.0.0.50"}]})
    assert resp.status_code == 202, resp.get_json()
    task = wait(resp.get_json()["task"]["id"])
    assert task["state"] == "succeeded", task
    assert task["kind"] == "vm.adopt" and task["result"]["addresses"] == ["10.0.0.50"]
    assert world["agent"].adopted == [(world["uuid"], world["uuid"], "admin")]
    vm = client.get("/api/v1/vms/byhand", headers=auth).get_json()["vm"]
    assert (vm["id"], vm["state"], vm["flavor"], vm["image"], vm["host"]["name"]) == (
        world["uuid"], "shutoff", "small", "debian12", "h1")
    assert vm["nics"][0]["mac"] == "52:54:00:aa:bb:cc" and vm["ips"] == ["10.0.0.50"]
    held = client.get("/api/v1/networks/lan/addresses", headers=auth).get_json()
    assert "10.0.0.50" in str(held)
    assert client.get("/api/v1/unmanaged", headers=auth).get_json()["unmanaged"] == []
    beat(core, world["host"], dom(world["uuid"], "running"))  # from now on it is a VM like any other
    assert client.get("/api/v1/vms/byhand", headers=auth).get_json()["vm"]["state"] == "running"
    assert client.get("/api/v1/unmanaged", headers=auth).get_json()["unmanaged"] == []


def test_address_held_by_another_vm_is_a_conflict_naming_it_and_nothing_changes(
        client: FlaskClient, core: Core, inv: Inventory, world: dict[str, Any], auth: dict[str, str]) -> None:
    inv.vm("holder", 1, world["host"], network=world["lan"], ip="10.0.0.50")
    before = inv.counts()
    resp = client.post(f"/api/v1/unmanaged/{world['uuid']}/adopt", headers=auth,
                       json={"name": "byhand", "networks": [{"ip": "10.0.0.50"}]})
    err = assert_error(resp, 409)
    assert "10.0.0.50" in err["message"] and "holder" in err["message"]
    assert inv.counts() == before
    assert len(client.get("/api/v1/unmanaged", headers=auth).get_json()["unmanaged"]) == 1


def test_adoption_is_refused_with_the_agents_reasons_or_without_an_address(
        client: FlaskClient, world: dict[str, Any], auth: dict[str, str], member: dict[str, Any],
        inv: Inventory) -> None:
    url = f"/api/v1/unmanaged/{world['uuid']}/adopt"
    before = inv.counts()
    err = assert_error(client.post(url, headers=auth, json={}), 400)  # 'ByHand' is no valid VM name
    assert "name" in err["message"]
    err = assert_error(client.post(url, headers=auth, json={"name": "byhand"}), 400)
    assert "give its 'ip'" in err["message"]
    world["agent"].facts["guest_addresses"] = {"52:54:00:aa:bb:cc": ["192.168.9.9", "10.0.0.77"]}
    world["agent"].facts["problems"] = ["the disk /srv/x.qcow2 is not a volume of labcloud's pool"]
    err = assert_error(client.post(url, headers=auth, json={"name": "byhand"}), 409)
    assert "not a volume of labcloud's pool" in err["message"]
    assert_error(client.post(url, headers=member["headers"], json={"name": "byhand"}), 403)
    assert_error(client.post(f"/api/v1/unmanaged/{uuid.uuid4()}/adopt", headers=auth, json={}), 404)
    assert inv.counts() == before


def test_address_from_the_guest_agent_and_failed_adoption_keeps_nothing(
        client: FlaskClient, world: dict[str, Any], auth: dict[str, str], wait: Any, inv: Inventory) -> None:
    world["agent"].facts["guest_addresses"] = {"52:54:00:aa:bb:cc": ["192.168.9.9", "10.0.0.77"]}
    world["agent"].fail = "the domain must be shut off"
    resp = client.post(f"/api/v1/unmanaged/{world['uuid']}/adopt", headers=auth, json={"name": "byhand"})
    assert resp.status_code == 202
    task = wait(resp.get_json()["task"]["id"])
    assert task["state"] == "failed" and "shut off" in task["error"]
    assert inv.count("vms") == 0 and inv.count("ip_allocations") == 0 and inv.count("vm_nics") == 0


def test_adopt_button_on_the_host_page_starts_the_task(client: FlaskClient, world: dict[str, Any], wait: Any,
                                                        core: Core) -> None:
    from tests.unit.test_web_pages import log_in

    web = log_in(client)
    page = web.get("/hosts/h1").get_data(as_text=True)
    action = f"/hosts/h1/unmanaged/{world['uuid']}/adopt"
    assert f'action="{action}"' in page and ">Adopt</button>" in page
    resp = web.post(action, {"name": "byhand", "ip": "10.0.0.51"})
    assert resp.status_code == 302 and "/vms/byhand" in resp.headers["Location"]
    task_id = resp.headers["Location"].split("task=")[1].split("#")[0]
    assert wait(task_id)["state"] == "succeeded"
    assert core.db.one("SELECT address FROM vm_nics WHERE vm_id = ?", [world["uuid"]]) == {"address": "10.0.0.51"}
    resp = web.post(f"/hosts/h1/unmanaged/{uuid.uuid4()}/adopt", {"name": "other"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("#unmanaged-title")
    assert "Could not adopt" in web.get("/hosts/h1").get_data(as_text=True)
