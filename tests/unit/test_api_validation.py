"""Bad input gets a clear error and changes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import Inventory, assert_error


@pytest.fixture
def cloud(inv: Inventory) -> dict[str, Any]:
    """One up host, an image, a flavor and a network: enough for a valid create request."""
    return {"host": inv.host("h1", vcpus=8, memory_mib=16384), "image": inv.image("debian"),
            "flavor": inv.flavor("small"), "network": inv.network("lan")}


def vm_body(**changes: Any) -> dict[str, Any]:
    """Return a valid create request with some fields changed (None removes a field)."""
    body: dict[str, Any] = {"name": "web1", "image": "debian", "flavor": "small", "networks": [{"network": "lan"}]}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def refused(client: FlaskClient, inv: Inventory, method: str, url: str, headers: dict[str, str], status: int,
            words: str, body: Any = None, code: str | None = None) -> dict[str, Any]:
    """Send a request that must be refused; check status, message and that no row changed."""
    before = inv.counts()
    err = assert_error(client.open(url, method=method, json=body, headers=headers), status, code)
    assert words.lower() in err["message"].lower(), err["message"]
    assert inv.counts() == before, "a refused request changed the inventory"
    return err


CREATE_CASES = [
    ("unknown image", vm_body(image="nope"), 400, "unknown image 'nope'"),
    ("unknown flavor", vm_body(flavor="nope"), 400, "unknown flavor 'nope'"),
    ("unknown network", vm_body(networks=[{"network": "nope"}]), 400, "unknown network 'nope'"),
    ("ip outside network", vm_body(networks=[{"network": "lan", "ip": "192.168.7.7"}]), 400,
     "192.168.7.7 is outside network lan"),
    ("ip not an address", vm_body(networks=[{"network": "lan", "ip": "10.0.0.300"}]), 400, "not an IP address"),
    ("ip is the broadcast address", vm_body(networks=[{"network": "lan", "ip": "10.0.0.255"}]), 400, "broadcast"),
    ("ip is the network address", vm_body(networks=[{"network": "lan", "ip": "10.0.0.0"}]), 400, "network or"),
    ("ip is the gateway", vm_body(networks=[{"network": "lan", "ip": "10.0.0.1"}]), 409, "in use"),
    ("bad name", vm_body(name="Web_1"), 400, "'name' must be"),
    ("no name", vm_body(name=None), 400, "'name' must be"),
    ("no networks", vm_body(networks=[]), 400, "'networks' must list"),
    ("network entry without network", vm_body(networks=[{"ip": "10.0.0.5"}]), 400, "needs a 'network'"),
    ("ssh_keys not a list", vm_body(ssh_keys="ssh-ed25519 AAAA"), 400, "'ssh_keys' must be a list"),
    ("password not a string", vm_body(password=1234), 400, "'password' must be a string"),
    ("bad hostname", vm_body(hostname="no_underscores"), 400, "'hostname'"),
    ("flavor no host can hold", vm_body(flavor="huge"), 409, "no host has room"),
    ("host that is down", vm_body(host="h2"), 409, "h2 is down"),
    ("host without room", vm_body(host="h1", flavor="huge"), 409, "h1 has no room"),
]


@pytest.mark.parametrize(("body", "status", "words"), [c[1:] for c in CREATE_CASES], ids=[c[0] for c in CREATE_CASES])
def test_bad_create_request_is_refused(client: FlaskClient, inv: Inventory, auth: dict[str, str],
                                       cloud: dict[str, Any], body: dict[str, Any], status: int, words: str) -> None:
    inv.flavor("huge", vcpus=4, memory_mib=64 * 1024, disk_gib=20)
    inv.host("h2", state="down", memory_mib=128 * 1024)
    refused(client, inv, "POST", "/api/v1/vms", auth, status, words, body)


def test_no_capacity_has_its_own_code(client: FlaskClient, inv: Inventory, auth: dict[str, str],
                                      cloud: dict[str, Any]) -> None:
    inv.flavor("huge", vcpus=4, memory_mib=64 * 1024, disk_gib=20)
    err = refused(client, inv, "POST", "/api/v1/vms", auth, 409, "no host has room", vm_body(flavor="huge"),
                  code="no_capacity")
    assert "smaller flavor" in err["message"]


def test_image_still_importing_is_refused(client: FlaskClient, inv: Inventory, auth: dict[str, str],
                                          cloud: dict[str, Any]) -> None:
    inv.image("fresh", state="importing")
    refused(client, inv, "POST", "/api/v1/vms", auth, 409, "wait for its import", vm_body(image="fresh"))


def test_body_must_be_a_json_object(client: FlaskClient, inv: Inventory, auth: dict[str, str],
                                    cloud: dict[str, Any]) -> None:
    refused(client, inv, "POST", "/api/v1/vms", auth, 400, "must be a JSON object", [vm_body()])
    before = inv.counts()
    resp = client.post("/api/v1/vms", data="{not json", headers={**auth, "Content-Type": "application/json"})
    assert_error(resp, 400)
    assert inv.counts() == before


def test_ip_already_in_use_is_a_conflict(client: FlaskClient, inv: Inventory, auth: dict[str, str],
                                         cloud: dict[str, Any]) -> None:
    inv.vm("db1", 1, cloud["host"], network=cloud["network"], ip="10.0.0.50")
    err = refused(client, inv, "POST", "/api/v1/vms", auth, 409, "10.0.0.50 is already in use",
                  vm_body(networks=[{"network": "lan", "ip": "10.0.0.50"}]))
    assert "choose another" in err["message"]


def test_same_ip_twice_in_one_request_is_a_conflict(client: FlaskClient, inv: Inventory, auth: dict[str, str],
                                                    cloud: dict[str, Any]) -> None:
    nets = [{"network": "lan", "ip": "10.0.0.60"}, {"network": "lan", "ip": "10.0.0.60"}]
    refused(client, inv, "POST", "/api/v1/vms", auth, 409, "already in use", vm_body(networks=nets))


def test_duplicate_vm_name_is_a_conflict(client: FlaskClient, inv: Inventory, auth: dict[str, str],
                                         cloud: dict[str, Any], member: dict[str, Any]) -> None:
    inv.vm("web1", member["id"], cloud["host"], network=cloud["network"])
    refused(client, inv, "POST", "/api/v1/vms", auth, 409, "a VM named 'web1' exists already", vm_body())


@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("DELETE", ""), ("POST", "/start"),
                                                ("POST", "/poweroff"), ("GET", "/guest")])
def test_unknown_vm_is_404(client: FlaskClient, inv: Inventory, auth: dict[str, str], method: str,
                           suffix: str) -> None:
    refused(client, inv, method, f"/api/v1/vms/nope{suffix}", auth, 404, "VM 'nope' not found", code="not_found")


@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("DELETE", ""), ("POST", "/start"),
                                                ("POST", "/reboot"), ("GET", "/guest")])
def test_other_members_vm_is_404(client: FlaskClient, inv: Inventory, cloud: dict[str, Any],
                                 member: dict[str, Any], other_member: dict[str, Any], method: str,
                                 suffix: str) -> None:
    vm = inv.vm("bobs", other_member["id"], cloud["host"], network=cloud["network"])
    for ref in ("bobs", vm["id"]):
        # Same answer as for a VM that does not exist: nothing tells that it does.
        refused(client, inv, method, f"/api/v1/vms/{ref}{suffix}", member["headers"], 404, f"VM '{ref}' not found")
    assert inv.db.one("SELECT state FROM vms WHERE id = ?", [vm["id"]]) == {"state": "running"}


def test_unknown_action_is_404(client: FlaskClient, inv: Inventory, auth: dict[str, str],
                               cloud: dict[str, Any]) -> None:
    inv.vm("web1", 1, cloud["host"])
    refused(client, inv, "POST", "/api/v1/vms/web1/explode", auth, 404, "unknown action 'explode'")


def test_bad_shutdown_timeout_is_refused(client: FlaskClient, inv: Inventory, auth: dict[str, str],
                                         cloud: dict[str, Any]) -> None:
    inv.vm("web1", 1, cloud["host"])
    refused(client, inv, "POST", "/api/v1/vms/web1/shutdown", auth, 400, "'timeout'", {"timeout": 0})
    refused(client, inv, "POST", "/api/v1/vms/web1/shutdown", auth, 400, "'timeout'", {"timeout": "soon"})


@pytest.mark.parametrize("state", ["building", "deleting"])
def test_action_on_a_busy_vm_is_a_conflict(client: FlaskClient, inv: Inventory, auth: dict[str, str],
                                           cloud: dict[str, Any], state: str) -> None:
    inv.vm("web1", 1, cloud["host"], state=state)
    refused(client, inv, "POST", "/api/v1/vms/web1/start", auth, 409, f"web1 is {state}")
    refused(client, inv, "DELETE", "/api/v1/vms/web1", auth, 409, f"web1 is {state}")


def test_action_on_a_vm_with_a_running_task_is_a_conflict(client: FlaskClient, core: Any, inv: Inventory,
                                                          auth: dict[str, str], cloud: dict[str, Any]) -> None:
    vm = inv.vm("web1", 1, cloud["host"])
    core.tasks.create("vm.reboot", 1, vm["id"], "web1")
    refused(client, inv, "POST", "/api/v1/vms/web1/start", auth, 409, "busy with another task")


# --- catalog: networks, flavors, images, hosts --------------------------------------------------

NET = {"name": "net2", "bridge": "br1", "cidr": "10.9.0.0/24", "gateway": "10.9.0.1", "dns": ["10.9.0.2"],
       "range": ["10.9.0.10", "10.9.0.99"]}
NETWORK_CASES = [
    ("gateway outside cidr", {"gateway": "10.8.0.1"}, "gateway 10.8.0.1 is outside 10.9.0.0/24"),
    ("range start outside cidr", {"range": ["10.8.0.10", "10.9.0.99"]}, "range start 10.8.0.10 is outside"),
    ("range end outside cidr", {"range": ["10.9.0.10", "10.9.1.5"]}, "range end 10.9.1.5 is outside"),
    ("range reversed", {"range": ["10.9.0.99", "10.9.0.10"]}, "comes after"),
    ("range not a pair", {"range": ["10.9.0.10"]}, "'range' must be [first, last]"),
    ("range not addresses", {"range": ["a", "b"]}, "is not an IP address"),
    ("cidr with host bits", {"cidr": "10.9.0.1/24"}, "is not a network address"),
    ("cidr not a cidr", {"cidr": "lan"}, "is not a network address"),
    ("missing cidr", {"cidr": None}, "'cidr' is required"),
    ("missing name", {"name": None}, "'name' is required"),
    ("missing bridge", {"bridge": None}, "'bridge' is required"),
    ("gateway not an address", {"gateway": "router"}, "gateway 'router' is not an IP address"),
    ("dns not a list", {"dns": "10.9.0.2"}, "'dns' must be a list"),
    ("dns entry not an address", {"dns": ["resolver"]}, "is not an IP address"),
    # The agent can only make these on a host; refusing them here says why before any VM fails.
    ("vlan id above 4094", {"vlan_id": 5000}, "vlan"),
    ("vlan id not a number", {"vlan_id": "ten"}, "vlan"),
    ("bridge name too long for Linux", {"bridge": "bridge-name-too-long"}, "bridge"),
    ("bridge name with a slash", {"bridge": "br/0"}, "bridge"),
]


@pytest.mark.parametrize(("changes", "words"), [c[1:] for c in NETWORK_CASES], ids=[c[0] for c in NETWORK_CASES])
def test_invalid_network_is_refused(client: FlaskClient, inv: Inventory, auth: dict[str, str],
                                    changes: dict[str, Any], words: str) -> None:
    body = {k: v for k, v in {**NET, **changes}.items() if v is not None}
    refused(client, inv, "POST", "/api/v1/networks", auth, 400, words, body)


def test_valid_network_is_created(client: FlaskClient, auth: dict[str, str]) -> None:
    resp = client.post("/api/v1/networks", json={**NET, "vlan_id": 42, "interface": "eth1"}, headers=auth)
    assert resp.status_code == 201, resp.get_json()
    net = resp.get_json()["network"]
    assert net["range"] == ["10.9.0.10", "10.9.0.99"] and net["dns"] == ["10.9.0.2"] and net["vlan_id"] == 42
    assert [n["name"] for n in client.get("/api/v1/networks", headers=auth).get_json()["networks"]] == ["net2"]


def test_duplicate_network_name_is_a_conflict(client: FlaskClient, inv: Inventory, auth: dict[str, str]) -> None:
    assert client.post("/api/v1/networks", json=NET, headers=auth).status_code == 201
    refused(client, inv, "POST", "/api/v1/networks", auth, 409, "a network named 'net2' exists already",
            {**NET, "bridge": "br2"})


FLAVOR = {"name": "medium", "vcpus": 2, "memory_mib": 2048, "disk_gib": 20}
FLAVOR_CASES = [
    ("missing name", {"name": None}, "'name' is required"),
    ("zero vcpus", {"vcpus": 0}, "'vcpus' must be a positive integer"),
    ("memory as a string", {"memory_mib": "2048"}, "'memory_mib' must be a positive integer"),
    ("disk as a float", {"disk_gib": 1.5}, "'disk_gib' must be a positive integer"),
    ("vcpus as a boolean", {"vcpus": True}, "'vcpus' must be a positive integer"),
]


@pytest.mark.parametrize(("changes", "words"), [c[1:] for c in FLAVOR_CASES], ids=[c[0] for c in FLAVOR_CASES])
def test_invalid_flavor_is_refused(client: FlaskClient, inv: Inventory, auth: dict[str, str],
                                   changes: dict[str, Any], words: str) -> None:
    body = {k: v for k, v in {**FLAVOR, **changes}.items() if v is not None}
    refused(client, inv, "POST", "/api/v1/flavors", auth, 400, words, body)


def test_duplicate_flavor_name_is_a_conflict(client: FlaskClient, inv: Inventory, auth: dict[str, str]) -> None:
    resp = client.post("/api/v1/flavors", json=FLAVOR, headers=auth)
    assert resp.status_code == 201
    assert resp.get_json()["flavor"] == {"id": 1, **FLAVOR}
    refused(client, inv, "POST", "/api/v1/flavors", auth, 409, "a flavor named 'medium' exists already",
            {**FLAVOR, "vcpus": 4})


def test_invalid_image_import_is_refused(client: FlaskClient, inv: Inventory, auth: dict[str, str],
                                         tmp_path: Path) -> None:
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"QFI\xfb")
    inv.image("debian")
    url = "/api/v1/images"
    refused(client, inv, "POST", url, auth, 400, "'name' is required", {"path": str(disk)})
    refused(client, inv, "POST", url, auth, 400, "absolute path", {"name": "x", "path": "disk.qcow2"})
    refused(client, inv, "POST", url, auth, 400, "is not a readable file", {"name": "x", "path": str(disk) + ".no"})
    refused(client, inv, "POST", url, auth, 400, "'format' must be one of", {"name": "x", "path": str(disk),
                                                                            "format": "vdi"})
    refused(client, inv, "POST", url, auth, 409, "an image named 'debian' exists already",
            {"name": "debian", "path": str(disk)})


def test_invalid_host_settings_are_refused(client: FlaskClient, inv: Inventory, auth: dict[str, str]) -> None:
    inv.host("h1")
    refused(client, inv, "PATCH", "/api/v1/hosts/nope", auth, 404, "host 'nope' not found", {"ram_ratio": 2})
    refused(client, inv, "PATCH", "/api/v1/hosts/h1", auth, 400, "settable fields are", {"name": "h9"})
    refused(client, inv, "PATCH", "/api/v1/hosts/h1", auth, 400, "settable fields are", {})
    refused(client, inv, "PATCH", "/api/v1/hosts/h1", auth, 400, "non-negative", {"ram_ratio": -1})
    refused(client, inv, "PATCH", "/api/v1/hosts/h1", auth, 400, "non-negative", {"cpu_ratio": "lots"})
    # A partly valid request changes nothing either.
    refused(client, inv, "PATCH", "/api/v1/hosts/h1", auth, 400, "non-negative", {"ram_ratio": 2, "cpu_ratio": -1})
    assert inv.db.one("SELECT ram_ratio, cpu_ratio FROM hosts") == {"ram_ratio": 1.0, "cpu_ratio": 4.0}


def test_unknown_objects_are_404(client: FlaskClient, inv: Inventory, auth: dict[str, str]) -> None:
    refused(client, inv, "GET", "/api/v1/hosts/nope", auth, 404, "host 'nope' not found")
    refused(client, inv, "GET", "/api/v1/tasks/nope", auth, 404, "task nope not found")
    refused(client, inv, "GET", "/api/v1/networks/nope/addresses", auth, 404, "network 'nope' not found")
    refused(client, inv, "GET", "/api/v1/no-such-endpoint", auth, 404, "no such endpoint")


def test_wrong_method_is_405_with_the_error_document(client: FlaskClient, inv: Inventory,
                                                     auth: dict[str, str]) -> None:
    refused(client, inv, "PUT", "/api/v1/vms", auth, 405, "method", code="method_not_allowed")
