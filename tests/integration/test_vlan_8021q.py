"""The Linux 802.1Q backend against a real kernel, in a scratch network namespace.

Runs where the kernel has 802.1Q VLAN devices; elsewhere it skips naming the missing
kernel feature (CONFIG_VLAN_8021Q). The machines this project was built on lack it, so
the skip is expected there; the unit tests (tests/unit/test_vlan_backend.py) cover the logic.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest

from hostagent.domainxml import VlanRecord
from hostagent.network import LinuxVlans, run_command

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (netns)")]

NS = "lcnet-vlan-test"  # not a lab namespace (lc-h*), not the benchmark's (lb-*, ls-*)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ip inside the scratch namespace."""
    return subprocess.run(["ip", "-n", NS, *args], capture_output=True, text=True, check=check, timeout=30)


@pytest.fixture
def scratch() -> Iterator[LinuxVlans]:
    """A namespace with a veth pair (eth0 stands in for the physical NIC); the backend's ip runs in it."""
    subprocess.run(["ip", "netns", "del", NS], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        ip("link", "add", "eth0", "type", "veth", "peer", "name", "peer0")
        probe = ip("link", "add", "link", "eth0", "name", "eth0.4094", "type", "vlan", "id", "4094", check=False)
        if probe.returncode != 0:
            pytest.skip("this kernel has no 802.1Q VLAN devices (CONFIG_VLAN_8021Q, module 8021q): "
                        f"`ip link add ... type vlan` said {probe.stderr.strip()!r}")
        ip("link", "del", "eth0.4094")
        yield LinuxVlans(lambda argv: run_command(["ip", "-n", NS, *argv[1:]]))
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True, check=False)


def link(name: str) -> dict[str, object] | None:
    """Return `ip -d -j link show` of a link in the scratch namespace, or None."""
    proc = ip("-d", "-j", "link", "show", "dev", name, check=False)
    return json.loads(proc.stdout)[0] if proc.returncode == 0 else None


def test_vlan_device_and_bridge_made_once_and_removed_when_unused(scratch: LinuxVlans) -> None:
    vlan = VlanRecord(interface="eth0", vlan_id=100, bridge="brv100", mtu=1400)
    scratch.ensure(vlan)
    scratch.ensure(vlan)  # idempotent
    dev = link("eth0.100")
    assert dev is not None and dev.get("master") == "brv100" and dev.get("mtu") == 1400
    assert dev["linkinfo"]["info_data"]["id"] == 100  # type: ignore[index]
    assert link("brv100") is not None
    assert scratch.release_unused([vlan], bridges_in_use={"brv100"}) == []
    assert scratch.release_unused([vlan], bridges_in_use=set()) == ["brv100", "eth0.100"]
    assert link("eth0.100") is None and link("brv100") is None
    kept = VlanRecord(interface="eth0", vlan_id=200, bridge="brv200", persistent=True)
    scratch.ensure(kept)
    assert scratch.release_unused([kept], bridges_in_use=set()) == []
    assert link("eth0.200") is not None
