"""Networks end to end on the lab: static IPs across hosts, two NICs, anti-spoofing, an image without cloud-init.

Two guests only (TCG boots are slow): net-a, from the image without cloud-init (its network
files written into its disk before the first boot), on h1; net-b, with cloud-init and two
NICs, on h2. Checks inside the guests run through qemu-guest-agent (guest-exec).
"""

from __future__ import annotations

import json
import time

import pytest

from lab.cloud import Api, LabCloud
from lab.guest import GuestResult, guest_exec
from lab.hosts import LabHost
from lab.image import ensure_nocloud_image as ensure_nocloud_image_file
from tests.lab.conftest import ping_until, wait_guest_agent

pytestmark = pytest.mark.lab

A_IP, B_IP, B_IP2, SPOOFED = "10.213.0.131", "10.213.0.132", "10.213.1.132", "10.213.0.250"


def lab_host(cloud: LabCloud, api: Api, vm: str) -> LabHost:
    """Return the lab host a VM runs on."""
    return cloud.lab.host(api.call("GET", f"/vms/{vm}", expect=200).json()["vm"]["host"]["name"])


def run_in(cloud: LabCloud, api: Api, vm: str, *argv: str, timeout: float = 60) -> GuestResult:
    """Run a command in a guest through its guest agent."""
    return guest_exec(lab_host(cloud, api, vm), vm, list(argv), timeout=timeout)


def ensure_second_network(api: Api) -> None:
    """The network lab2 on each host's br1 (the lab's second switch), no gateway."""
    if api.call("GET", "/networks/lab2").status_code == 404:
        api.call("POST", "/networks", {"name": "lab2", "bridge": "br1", "cidr": "10.213.1.0/24",
                                       "range": ["10.213.1.100", "10.213.1.199"]}, expect=201)


def ensure_nocloud_image(api: Api) -> None:
    """Import the guest image without cloud-init as debian12-nocloud, marked cloud_init: false."""
    if any(i["name"] == "debian12-nocloud" for i in api.call("GET", "/images", expect=200).json()["images"]):
        return
    path = ensure_nocloud_image_file()
    task = api.call("POST", "/images", {"name": "debian12-nocloud", "path": str(path.resolve()), "format": "qcow2",
                                        "os": "debian12", "cloud_init": False}, expect=202).json()["task"]
    done = api.wait_task(task["id"], timeout=600)
    assert done["state"] == "succeeded", done["error"]


def test_two_hosts_two_nics_anti_spoofing_and_no_cloud_init(cloud: LabCloud, api: Api, cleanup: list[str]) -> None:
    ensure_second_network(api)
    ensure_nocloud_image(api)
    cleanup.extend(["net-a", "net-b"])
    base = {"flavor": "small", "password": "labcloud-test-pw"}
    tasks = [
        api.call("POST", "/vms", {**base, "image": "debian12-nocloud", "name": "net-a", "host": "h1",
                                  "network": "lab", "ip": A_IP}, expect=202).json()["task"],
        api.call("POST", "/vms", {**base, "image": "debian12", "name": "net-b", "host": "h2",
                                  "nics": [{"network": "lab", "ip": B_IP}, {"network": "lab2", "ip": B_IP2}]},
                 expect=202).json()["task"],
    ]
    for task in tasks:
        done = api.wait_task(task["id"], timeout=600)
        assert done["state"] == "succeeded", done["error"]
    started = time.monotonic()
    # Acceptance 6: the guest without cloud-init answers on its static IP (files written offline).
    assert ping_until(A_IP, timeout=300), f"{A_IP} (image without cloud-init) never answered ping"
    print(f"{A_IP} (no cloud-init) answered ping {time.monotonic() - started:.0f} s after the creates finished")
    guests = {name: wait_guest_agent(api, name, timeout=300) for name in ("net-a", "net-b")}
    assert all(guests.values()), f"a guest agent never answered: {guests}"
    print(f"guest agents answered {time.monotonic() - started:.0f} s after both creates finished")

    # Acceptance 1: different hosts, same network, ping each other on their static IPs.
    assert lab_host(cloud, api, "net-a").name != lab_host(cloud, api, "net-b").name
    ping_b = run_in(cloud, api, "net-a", "ping", "-c", "3", "-W", "2", B_IP)
    assert ping_b.exitcode == 0, ping_b
    ping_a = run_in(cloud, api, "net-b", "ping", "-c", "3", "-W", "2", A_IP)
    assert ping_a.exitcode == 0, ping_a

    # Acceptance 4: both addresses, exactly one default route (on the first NIC).
    b = guests["net-b"]
    assert b is not None
    addrs = [a for i in b["interfaces"].values() for a in i["addrs"]]
    assert B_IP in addrs and B_IP2 in addrs, addrs
    routes = json.loads(run_in(cloud, api, "net-b", "ip", "-j", "-4", "route", "show", "default").stdout)
    assert [(r["gateway"], r["dev"]) for r in routes] == [("10.213.0.1", "eth0")], routes
    assert b["hostname"] == "net-b"
    hosts_file = run_in(cloud, api, "net-b", "cat", "/etc/hosts").stdout
    assert "net-b" in hosts_file, hosts_file

    # Acceptance 5: a guest that adds another address and pings from it gets no answer.
    added = run_in(cloud, api, "net-a", "ip", "addr", "add", f"{SPOOFED}/24", "dev", "eth0")
    assert added.exitcode == 0, added
    spoofed = run_in(cloud, api, "net-a", "ping", "-c", "3", "-W", "2", "-I", SPOOFED, B_IP)
    assert spoofed.exitcode != 0, f"a ping from the unassigned {SPOOFED} got an answer: {spoofed.stdout}"
    own = run_in(cloud, api, "net-a", "ping", "-c", "3", "-W", "2", "-I", A_IP, B_IP)
    assert own.exitcode == 0, own
