"""Several NICs per VM (one default route) and changing a stopped VM's address."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from controller.core import Core
from controller.ops.vms import default_nic, nic_spec
from tests.conftest import Inventory, assert_error


@pytest.fixture
def nets(inv: Inventory) -> dict[str, Any]:
    """Host, image, flavor; networks lan (gateway), san (none) and dmz (gateway)."""
    inv.host("h1")
    inv.image("debian")
    inv.flavor("small")
    return {"lan": inv.network("lan"),
            "san": inv.network("san", cidr="10.2.0.0/24", range_=("10.2.0.10", "10.2.0.20"), gateway=None),
            "dmz": inv.network("dmz", cidr="10.3.0.0/24", range_=("10.3.0.10", "10.3.0.20"), gateway="10.3.0.1")}


def refused(client: FlaskClient, inv: Inventory, method: str, url: str, headers: dict[str, str], status: int,
            words: str, body: Any = None) -> None:
    """A refused request: status, message, and no row changed."""
    before = inv.counts()
    held = inv.db.all("SELECT * FROM ip_allocations ORDER BY id")
    err = assert_error(client.open(url, method=method, json=body, headers=headers), status)
    assert words.lower() in err["message"].lower(), err["message"]
    assert inv.counts() == before
    assert inv.db.all("SELECT * FROM ip_allocations ORDER BY id") == held


def test_default_route_goes_to_the_marked_nic_or_the_first_with_a_gateway(nets: dict[str, Any]) -> None:
    lan, san, dmz = nets["lan"], nets["san"], nets["dmz"]
    assert default_nic([{}, {}, {}], [san, lan, dmz]) == 1
    assert default_nic([{}, {}, {"default": True}], [san, lan, dmz]) == 2
    assert default_nic([{}], [san]) is None
    spec = nic_spec(lan, "52:54:00:00:00:01", "10.0.0.40", True)
    assert spec["addresses"] == ["10.0.0.40/24"] and spec["gateway"] == "10.0.0.1" and spec["dns"] == ["10.0.0.2"]
    assert nic_spec(lan, "52:54:00:00:00:01", "10.0.0.40", False)["gateway"] is None


BAD = [
    ({"nics": [{"network": "lan", "default": True}, {"network": "dmz", "default": True}]}, 400, "only one nic"),
    ({"nics": [{"network": "san", "default": True}]}, 400, "network san has no gateway"),
    ({"nics": [{"network": "lan", "default": "yes"}]}, 400, "'default' must be true or false"),
    ({"nics": [{"network": "lan", "ip": 5}]}, 400, "'ip' must be an address string"),
    ({"nics": []}, 400, "must list at least one"),
]


@pytest.mark.parametrize(("extra", "status", "words"), BAD)
def test_bad_nic_lists_are_refused(client: FlaskClient, inv: Inventory, auth: dict[str, str], nets: dict[str, Any],
                                   extra: dict[str, Any], status: int, words: str) -> None:
    body = {"name": "multi", "image": "debian", "flavor": "small", **extra}
    refused(client, inv, "POST", "/api/v1/vms", auth, status, words, body)


@pytest.fixture
def held_tasks(core: Core) -> Iterator[None]:
    """Occupy every task worker so new tasks stay queued (and their reservations visible)."""
    gate = threading.Event()
    for _ in range(core.config.task_workers):
        task_id = core.tasks.create("test.block", 1)
        core.tasks.submit(task_id, lambda _ctx: gate.wait(30) and None)
    yield
    gate.set()


@pytest.mark.parametrize("form", ["nics", "networks", "single"])
def test_every_create_form_holds_addresses_and_one_default(client: FlaskClient, inv: Inventory,
                                                           auth: dict[str, str], nets: dict[str, Any],
                                                           held_tasks: None, form: str) -> None:
    body: dict[str, Any] = {"name": "multi", "image": "debian", "flavor": "small"}
    if form == "single":
        body.update(network="lan", ip="10.0.0.44")
    else:
        body[form] = [{"network": "san"}, {"network": "lan", "ip": "10.0.0.44"}, {"network": "dmz", "default": True}]
    resp = client.post("/api/v1/vms", headers=auth, json=body)
    assert resp.status_code == 202, resp.get_json()
    vm = client.get("/api/v1/vms/multi", headers=auth).get_json()["vm"]
    got = [(n["network"], n["address"], n["default"]) for n in vm["nics"]]
    if form == "single":
        assert got == [("lan", "10.0.0.44", True)]
    else:
        assert got == [("san", "10.2.0.10", False), ("lan", "10.0.0.44", False), ("dmz", "10.3.0.10", True)]


@pytest.fixture
def stopped(inv: Inventory, nets: dict[str, Any]) -> dict[str, Any]:
    """A stopped VM web1 with 10.0.0.40 on lan, and web2 holding 10.0.0.41; 10.0.0.50 reserved."""
    host = inv.db.one("SELECT * FROM hosts WHERE name = 'h1'")
    with inv.db.write() as w:
        w.execute("UPDATE networks SET reserved = '[\"10.0.0.50\"]' WHERE name = 'lan'")
    lan = inv.db.one("SELECT * FROM networks WHERE name = 'lan'")
    inv.vm("web2", 1, host, network=lan, ip="10.0.0.41")
    return inv.vm("web1", 1, host, network=lan, ip="10.0.0.40", state="shutoff")


@pytest.mark.parametrize(("url", "body", "status", "words"), [
    ("/api/v1/vms/web1/nics/0", {"ip": "10.0.0.50"}, 409, "ip 10.0.0.50 is reserved on network lan"),
    ("/api/v1/vms/web1/nics/0", {"ip": "10.0.0.41"}, 409, "ip 10.0.0.41 is already in use on network lan"),
    ("/api/v1/vms/web1/nics/0", {"ip": "10.9.0.1"}, 400, "outside network lan"),
    ("/api/v1/vms/web1/nics/0", {"ip": "10.0.0.40"}, 400, "has 10.0.0.40 already"),
    ("/api/v1/vms/web1/nics/3", {"ip": "10.0.0.60"}, 404, "has no nic 3"),
    ("/api/v1/vms/web2/nics/0", {"ip": "10.0.0.60"}, 409, "shut it down"),
])
def test_bad_address_changes_are_refused(client: FlaskClient, inv: Inventory, auth: dict[str, str],
                                         stopped: dict[str, Any], url: str, body: dict[str, Any], status: int,
                                         words: str) -> None:
    refused(client, inv, "PUT", url, auth, status, words, body)


def test_members_cannot_readdress_other_users_vms(client: FlaskClient, inv: Inventory, member: dict[str, Any],
                                                  stopped: dict[str, Any]) -> None:
    refused(client, inv, "PUT", "/api/v1/vms/web1/nics/0", member["headers"], 404, "not found", {"ip": "10.0.0.60"})


def test_failed_readdress_keeps_the_old_address(client: FlaskClient, inv: Inventory, auth: dict[str, str],
                                                stopped: dict[str, Any], wait: Any) -> None:
    resp = client.put("/api/v1/vms/web1/nics/0", headers=auth, json={"ip": "10.0.0.60"})
    assert resp.status_code == 202, resp.get_json()
    task = wait(resp.get_json()["task"]["id"])
    assert task["state"] == "failed"  # the unit tests' hosts have no agent
    held = {r["address"] for r in inv.db.all("SELECT address FROM ip_allocations WHERE vm_id = ?", [stopped["id"]])}
    assert held == {"10.0.0.40"}
    assert inv.db.one("SELECT address FROM vm_nics WHERE vm_id = ?", [stopped["id"]]) == {"address": "10.0.0.40"}


def test_readdress_holds_both_until_the_host_answers(app: Flask, client: FlaskClient, inv: Inventory,
                                                     auth: dict[str, str], stopped: dict[str, Any],
                                                     held_tasks: None) -> None:
    resp = client.put("/api/v1/vms/web1/nics/0", headers=auth, json={})
    assert resp.status_code == 202, resp.get_json()
    held = sorted(r["address"] for r in inv.db.all("SELECT address FROM ip_allocations WHERE vm_id = ?",
                                                   [stopped["id"]]))
    assert held == ["10.0.0.10", "10.0.0.40"]  # the lowest free one, old kept until the seed is rewritten
