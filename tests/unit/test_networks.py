"""Networks: definitions, bad input (status, message, nothing changed), deletion, reservations."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import Inventory, assert_error


def net_body(**changes: Any) -> dict[str, Any]:
    """Return a valid network definition with some fields changed (None removes a field)."""
    body: dict[str, Any] = {"name": "lan2", "bridge": "br1", "cidr": "10.9.0.0/24", "gateway": "10.9.0.1",
                            "dns": ["10.9.0.2"], "range": ["10.9.0.10", "10.9.0.99"]}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def refused(client: FlaskClient, inv: Inventory, method: str, url: str, headers: dict[str, str], status: int,
            words: str, body: Any = None) -> dict[str, Any]:
    """Send a request that must be refused; check status, message and that no row changed."""
    before = inv.counts()
    reserved_before = inv.db.all("SELECT id, reserved FROM networks ORDER BY id")
    err = assert_error(client.open(url, method=method, json=body, headers=headers), status)
    assert words.lower() in err["message"].lower(), err["message"]
    assert inv.counts() == before, "a refused request changed the inventory"
    assert inv.db.all("SELECT id, reserved FROM networks ORDER BY id") == reserved_before
    return err


BAD_NETWORKS = [
    ("overlapping cidr, both untagged",
     net_body(cidr="10.0.0.128/25", gateway=None, range=["10.0.0.130", "10.0.0.140"]), 409,
     "overlaps network lan (10.0.0.0/24) on the untagged segment"),
    ("overlapping cidr on one vlan", net_body(vlan_id=7, cidr="10.8.0.0/16", gateway=None,
                                              range=["10.8.0.10", "10.8.0.20"]), 409, "overlaps network v7"),
    ("gateway outside the cidr", net_body(gateway="10.1.0.1"), 400, "gateway 10.1.0.1 is outside 10.9.0.0/24"),
    ("range start outside", net_body(range=["10.8.255.1", "10.9.0.20"]), 400, "range start 10.8.255.1 is outside"),
    ("range end outside", net_body(range=["10.9.0.10", "10.9.1.20"]), 400, "range end 10.9.1.20 is outside"),
    ("range backwards", net_body(range=["10.9.0.20", "10.9.0.10"]), 400, "comes after range end"),
    ("vlan id 0", net_body(vlan_id=0), 400, "vlan_id 0 must be an integer from 1 to 4094"),
    ("vlan id 4095", net_body(vlan_id=4095), 400, "vlan_id 4095 must be an integer from 1 to 4094"),
    ("vlan id a string", net_body(vlan_id="100"), 400, "must be an integer from 1 to 4094"),
    ("vlan type without id", net_body(type="vlan", interface="eth0"), 400, "needs 'vlan_id'"),
    ("vlan type without interface", net_body(type="vlan", vlan_id=100), 400, "needs 'interface'"),
    ("unknown type", net_body(type="vxlan"), 400, "type 'vxlan' must be 'bridge'"),
    ("reserved outside", net_body(reserved=["10.9.1.5"]), 400, "reserved address 10.9.1.5 is outside"),
    ("reserved not an address", net_body(reserved=["ten"]), 400, "reserved address 'ten' is not an IP address"),
    ("mtu too small", net_body(mtu=20), 400, "mtu 20 must be an integer from 68 to 65535"),
    ("cidr with host bits", net_body(cidr="10.9.0.5/24"), 400, "is not a network address"),
    ("bad bridge name", net_body(bridge="a bridge"), 400, "not a Linux interface name"),
    ("numeric name", net_body(name="42"), 400, "not a number"),
    ("name taken", net_body(name="lan", cidr="10.7.0.0/24", gateway=None, range=["10.7.0.2", "10.7.0.3"]), 409,
     "a network named 'lan' exists already"),
    ("persistent not a bool", net_body(persistent="yes"), 400, "'persistent' must be true or false"),
]


@pytest.mark.parametrize(("body", "status", "words"), [c[1:] for c in BAD_NETWORKS], ids=[c[0] for c in BAD_NETWORKS])
def test_bad_network_is_refused(client: FlaskClient, inv: Inventory, auth: dict[str, str], body: dict[str, Any],
                                status: int, words: str) -> None:
    inv.network("lan")
    created = client.post("/api/v1/networks", headers=auth, json=net_body(
        name="v7", vlan_id=7, cidr="10.8.1.0/24", gateway=None, range=["10.8.1.10", "10.8.1.20"]))
    assert created.status_code == 201, created.get_json()
    refused(client, inv, "POST", "/api/v1/networks", auth, status, words, body)


def test_same_cidr_on_another_vlan_is_fine(client: FlaskClient, inv: Inventory, auth: dict[str, str]) -> None:
    for name, vid in (("v100", 100), ("v200", 200)):
        resp = client.post("/api/v1/networks", headers=auth, json=net_body(
            name=name, type="vlan", vlan_id=vid, interface="eth0", bridge=f"brv{vid}", mtu=1400, persistent=True))
        assert resp.status_code == 201, resp.get_json()
        net = resp.get_json()["network"]
        assert (net["type"], net["vlan_id"], net["interface"], net["mtu"], net["persistent"]) == \
            ("vlan", vid, "eth0", 1400, True)
    got = client.get("/api/v1/networks/v200", headers=auth).get_json()["network"]
    assert got["bridge"] == "brv200" and got["reserved"] == []


def test_deleting_a_network_with_vms_is_refused(client: FlaskClient, inv: Inventory, auth: dict[str, str]) -> None:
    net = inv.network("lan")
    inv.vm("web1", 1, None, network=net)
    inv.vm("web2", 1, None, network=net)
    err = refused(client, inv, "DELETE", "/api/v1/networks/lan", auth, 409, "network lan still has VMs (web1, web2)")
    assert "destroy them" in err["message"]


def test_deleting_an_unused_network(client: FlaskClient, inv: Inventory, auth: dict[str, str]) -> None:
    net = inv.network("lan")
    vm = inv.vm("web1", 1, None, network=net)
    with inv.db.write() as w:
        w.execute("DELETE FROM vms WHERE id = ?", [vm["id"]])
    resp = client.delete(f"/api/v1/networks/{net['id']}", headers=auth)
    assert resp.status_code == 200 and resp.get_json() == {"deleted": "lan"}
    assert inv.count("networks") == 0
    assert_error(client.delete("/api/v1/networks/lan", headers=auth), 404)


def test_members_may_not_change_networks(client: FlaskClient, inv: Inventory, member: dict[str, Any]) -> None:
    inv.network("lan")
    refused(client, inv, "POST", "/api/v1/networks", member["headers"], 403, "admin", net_body())
    refused(client, inv, "DELETE", "/api/v1/networks/lan", member["headers"], 403, "admin")
    refused(client, inv, "PUT", "/api/v1/networks/lan/reserved", member["headers"], 403, "admin",
            {"reserved": ["10.0.0.5"]})


def create_body(ip: str | None = None, network: str = "lan") -> dict[str, Any]:
    """A VM create request on one network."""
    nic: dict[str, Any] = {"network": network}
    if ip:
        nic["ip"] = ip
    return {"name": "web9", "image": "debian", "flavor": "small", "networks": [nic]}


@pytest.fixture
def catalog(inv: Inventory) -> dict[str, Any]:
    """A host, image, flavor and the network lan with 10.0.0.10 reserved."""
    net = inv.network("lan", range_=("10.0.0.10", "10.0.0.12"))
    with inv.db.write() as w:
        w.execute("UPDATE networks SET reserved = ? WHERE id = ?", ['["10.0.0.10", "10.0.0.77"]', net["id"]])
    return {"host": inv.host("h1"), "image": inv.image("debian"), "flavor": inv.flavor("small"),
            "network": inv.db.one("SELECT * FROM networks WHERE id = ?", [net["id"]])}


def test_requested_ip_that_is_reserved(client: FlaskClient, inv: Inventory, auth: dict[str, str],
                                       catalog: dict[str, Any]) -> None:
    refused(client, inv, "POST", "/api/v1/vms", auth, 409, "ip 10.0.0.77 is reserved on network lan",
            create_body("10.0.0.77"))


def test_requested_ip_that_is_taken(client: FlaskClient, inv: Inventory, auth: dict[str, str],
                                    catalog: dict[str, Any]) -> None:
    inv.vm("web1", 1, catalog["host"], network=catalog["network"], ip="10.0.0.40")
    refused(client, inv, "POST", "/api/v1/vms", auth, 409, "ip 10.0.0.40 is already in use on network lan",
            create_body("10.0.0.40"))


def test_automatic_addresses_skip_reserved_ones(inv: Inventory, catalog: dict[str, Any]) -> None:
    a = inv.vm("a", 1, catalog["host"], network=catalog["network"])
    b = inv.vm("b", 1, catalog["host"], network=catalog["network"])
    got = {r["vm_id"]: r["address"] for r in inv.db.all("SELECT vm_id, address FROM ip_allocations")}
    assert (got[a["id"]], got[b["id"]]) == ("10.0.0.11", "10.0.0.12")


def test_reserving_a_held_address_is_refused(client: FlaskClient, inv: Inventory, auth: dict[str, str],
                                             catalog: dict[str, Any]) -> None:
    inv.vm("web1", 1, catalog["host"], network=catalog["network"], ip="10.0.0.40")
    refused(client, inv, "PUT", "/api/v1/networks/lan/reserved", auth, 409, "10.0.0.40 is held by a VM",
            {"reserved": ["10.0.0.40"]})
    refused(client, inv, "PUT", "/api/v1/networks/lan/reserved", auth, 400, "outside", {"reserved": ["10.1.0.1"]})
    resp = client.put("/api/v1/networks/lan/reserved", headers=auth, json={"reserved": ["10.0.0.41", "10.0.0.41"]})
    assert resp.status_code == 200 and resp.get_json()["network"]["reserved"] == ["10.0.0.41"]


def test_members_see_addresses_but_not_other_users_vms(client: FlaskClient, inv: Inventory,
                                                        member: dict[str, Any], catalog: dict[str, Any]) -> None:
    inv.vm("mine", member["id"], catalog["host"], network=catalog["network"], ip="10.0.0.40")
    inv.vm("theirs", 1, catalog["host"], network=catalog["network"], ip="10.0.0.41")
    rows = client.get("/api/v1/networks/lan/addresses", headers=member["headers"]).get_json()["addresses"]
    assert [(r["address"], r["vm_name"]) for r in rows] == [("10.0.0.40", "mine"), ("10.0.0.41", None)]
