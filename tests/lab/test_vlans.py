"""VLAN isolation with the Open vSwitch backend on the lab (userspace OVS tags VLANs without kernel 802.1Q)."""

from __future__ import annotations

import time

import pytest

from lab.cloud import Api, LabCloud
from lab.guest import guest_exec
from lab.ovs import OVS_BRIDGE, ensure_ovs
from tests.lab.conftest import destroy_vm, wait_guest_agent

pytestmark = pytest.mark.lab

# a and c have addresses in the same subnet: only the VLAN tag keeps them apart.
VMS = {"vlan-a": ("h1", "v100", "10.213.100.11"), "vlan-b": ("h2", "v100", "10.213.100.12"),
       "vlan-c": ("h1", "v200", "10.213.100.13")}


def test_ovs_vlan_isolation(cloud: LabCloud, api: Api) -> None:
    started = time.monotonic()
    for host in cloud.lab.hosts:
        ensure_ovs(host)
        cloud.set_agent_switch(host, "ovs")
    print(f"OVS up and agents switched in {time.monotonic() - started:.1f} s")
    made: list[str] = []
    try:
        for vid in (100, 200):
            if api.call("GET", f"/networks/v{vid}").status_code == 404:
                api.call("POST", "/networks", {
                    "name": f"v{vid}", "type": "vlan", "vlan_id": vid, "interface": "eth0", "bridge": OVS_BRIDGE,
                    "cidr": "10.213.100.0/24", "range": ["10.213.100.100", "10.213.100.199"]}, expect=201)
        tasks = []
        for name, (host, network, ip) in VMS.items():
            made.append(name)
            tasks.append(api.call("POST", "/vms", {"name": name, "image": "debian12", "flavor": "small",
                                                   "host": host, "network": network, "ip": ip}, expect=202))
        for resp in tasks:
            done = api.wait_task(resp.json()["task"]["id"], timeout=600)
            assert done["state"] == "succeeded", done["error"]
        a_host = cloud.lab.host("h1")
        tags = a_host.run(["ovs-vsctl", "--bare", "--columns=tag", "list", "port"]).stdout.split()
        assert {"100", "200"} <= set(tags), tags  # libvirt tagged the ports of a (100) and c (200) on h1
        for name in VMS:
            assert wait_guest_agent(api, name, timeout=300) is not None, f"{name}: guest agent silent"

        def ping(src: str, dst: str) -> int:
            host = cloud.lab.host(VMS[src][0])
            return guest_exec(host, src, ["ping", "-c", "3", "-W", "2", VMS[dst][2]], timeout=60).exitcode

        assert ping("vlan-a", "vlan-b") == 0, "a and b on VLAN 100 (different hosts) do not reach each other"
        assert ping("vlan-b", "vlan-a") == 0
        assert ping("vlan-a", "vlan-c") != 0, "a on VLAN 100 reached c on VLAN 200"
    finally:
        for name in made:
            if api.call("GET", f"/vms/{name}").status_code == 200:
                destroy_vm(api, name)
        for vid in (100, 200):
            api.call("DELETE", f"/networks/v{vid}")
        for host in cloud.lab.hosts:
            cloud.set_agent_switch(host, "linux")
