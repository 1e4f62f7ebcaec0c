"""Domain XML on the lab: an admin edits a running guest's XML, restarts it, reverts it (one guest)."""

from __future__ import annotations

import time

import pytest

from lab.cloud import Api, LabCloud
from tests.lab.conftest import create_vm, wait_guest_agent

pytestmark = pytest.mark.lab


def _guest_cpus(api: Api, name: str, want: int, timeout: float = 240) -> int | None:
    """Poll the guest agent until it reports `want` online vCPUs; return the last count seen."""
    deadline, seen = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        guest = wait_guest_agent(api, name, timeout=max(1.0, deadline - time.monotonic()))
        seen = guest.get("cpus") if guest else None
        if seen == want:
            return seen
        time.sleep(2)
    return seen


def test_admin_adds_a_vcpu_and_a_description_then_reverts(cloud: LabCloud, api: Api, cleanup: list[str]) -> None:
    name = "e2e-xml"
    cleanup.append(name)
    task = create_vm(api, name)
    assert task["state"] == "succeeded", task["error"]
    vm = api.call("GET", f"/vms/{name}", expect=200).json()["vm"]
    host = next(h for h in cloud.lab.hosts if h.name == vm["host"]["name"])
    assert _guest_cpus(api, name, 1) == 1, "the guest agent never reported 1 vCPU"

    original = api.call("GET", f"/vms/{name}/xml", expect=200).json()
    assert original["version"] == 1
    xml = original["xml"]
    assert "<vcpu placement='static'>1</vcpu>" in xml, xml
    edited = xml.replace("<vcpu placement='static'>1</vcpu>", "<vcpu placement='static'>2</vcpu>").replace(
        "</uuid>", "</uuid>\n  <description>two vCPUs for the build</description>")

    preview = api.call("PUT", f"/vms/{name}/xml", {"xml": edited, "dry_run": True}, expect=200).json()
    assert preview["changed"] and preview["version"] == 1 and "+  <description>" in preview["diff"]

    done = api.call("PUT", f"/vms/{name}/xml", {"xml": edited, "restart": True}, expect=200).json()
    assert done["changed"] and done["restarted"] and not done["next_boot"], done
    assert done["version"] == 2 and done["vm"]["vcpus"] == 2
    assert "two vCPUs for the build" in host.virsh("dumpxml", "--inactive", vm["id"])
    assert _guest_cpus(api, name, 2) == 2, "after the restart the guest does not report 2 vCPUs"
    assert api.call("GET", f"/vms/{name}", expect=200).json()["vm"]["vcpus"] == 2

    history = api.call("GET", f"/vms/{name}/xml/history", expect=200).json()["history"]
    assert [(h["version"], h["source"], h["author"]) for h in history][:1] == [(2, "edit", "admin")]
    assert history[-1]["version"] == 1 and "two vCPUs" in history[0]["diff"]

    reverted = api.call("POST", f"/vms/{name}/xml/revert", {"version": 1}, expect=200).json()
    assert reverted["version"] == 3 and reverted["next_boot"] and not reverted["restarted"]
    in_libvirt = host.virsh("dumpxml", "--inactive", "--security-info", vm["id"])
    v1 = api.call("GET", f"/vms/{name}/xml/history/1", expect=200).json()["xml"]
    assert in_libvirt.strip() == v1.strip()
    assert api.call("GET", f"/vms/{name}", expect=200).json()["vm"]["vcpus"] == 1
