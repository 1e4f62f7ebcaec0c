"""End to end on the two-host lab: real libvirtd, QEMU and Debian guests."""

from __future__ import annotations

import threading
import time

import pytest

from lab.cloud import Api, LabCloud
from tests.lab.conftest import create_vm, destroy_vm, ping_lost, ping_until, wait_guest_agent

pytestmark = pytest.mark.lab


def _lab_host(cloud: LabCloud, name: str):  # type: ignore[no-untyped-def]
    return next(h for h in cloud.lab.hosts if h.name == name)


def _domain_exists(host, uuid: str) -> bool:  # type: ignore[no-untyped-def]
    proc = host.run(["virsh", "-c", "qemu:///system", "domstate", uuid], check=False)
    return proc.returncode == 0


def _run_action(api: Api, name: str, action: str) -> dict:
    task = api.call("POST", f"/vms/{name}/{action}", {}, expect=202).json()["task"]
    return api.wait_task(task["id"], timeout=300)


def test_vm_with_static_ip_lifecycle(cloud: LabCloud, api: Api, cleanup: list[str]) -> None:
    cleanup.append("e2e-static")
    ip = "10.213.0.120"
    task = create_vm(api, "e2e-static", ip=ip)
    assert task["state"] == "succeeded", task["error"]
    vm = api.call("GET", "/vms/e2e-static", expect=200).json()["vm"]
    assert vm["ips"] == [ip]
    host = _lab_host(cloud, vm["host"]["name"])
    other = next(h for h in cloud.lab.hosts if h.name != host.name)
    assert host.virsh("domstate", vm["id"]).strip() == "running"
    assert not _domain_exists(other, vm["id"])

    assert ping_until(ip), f"{ip} never answered ping from the lab switch"
    guest = wait_guest_agent(api, "e2e-static")
    assert guest is not None, "qemu-guest-agent never answered"
    assert guest["hostname"] == "e2e-static"
    assert any(a.startswith(ip) for i in guest["interfaces"].values() for a in i["addrs"])

    # One request id follows the create through controller, task and agent logs.
    request_id = task["request_id"]
    assert request_id.startswith("req-")
    agent_log = (cloud.log_dir / f"agent-{host.name}.log").read_text()
    controller_log = (cloud.log_dir / "controller.log").read_text()
    assert f"[{request_id}]" in agent_log and f"[{request_id}]" in controller_log

    assert _run_action(api, "e2e-static", "reboot")["state"] == "succeeded"
    assert ping_lost(ip), "the guest never went down after the reboot request"
    assert ping_until(ip), f"{ip} did not answer again after the reboot"
    assert wait_guest_agent(api, "e2e-static") is not None, "guest agent silent after the reboot"
    assert _run_action(api, "e2e-static", "shutdown")["state"] == "succeeded"
    assert api.call("GET", "/vms/e2e-static").json()["vm"]["state"] == "shutoff"
    assert host.virsh("domstate", vm["id"]).strip() == "shut off"
    assert _run_action(api, "e2e-static", "start")["state"] == "succeeded"
    assert host.virsh("domstate", vm["id"]).strip() == "running"
    assert _run_action(api, "e2e-static", "poweroff")["state"] == "succeeded"
    assert host.virsh("domstate", vm["id"]).strip() == "shut off"

    assert destroy_vm(api, "e2e-static")["state"] == "succeeded"
    assert api.call("GET", "/vms/e2e-static").status_code == 404
    assert not _domain_exists(host, vm["id"])
    volumes = host.virsh("vol-list", "labcloud")
    assert vm["id"] not in volumes, volumes
    held = api.call("GET", "/networks/lab/addresses", expect=200).json()["addresses"]
    assert ip not in [a["address"] for a in held]


def test_two_concurrent_creates_land_on_different_hosts(cloud: LabCloud, api: Api, cleanup: list[str]) -> None:
    cleanup.extend(["e2e-spread-a", "e2e-spread-b", "e2e-spread-c"])
    hosts = api.call("GET", "/hosts", expect=200).json()["hosts"]
    try:
        for h in hosts:  # room for exactly one 512 MiB VM per host
            api.call("PATCH", f"/hosts/{h['name']}", {"reserved_memory_mib": h["memory_mib"] - 700}, expect=200)
        results: dict[str, dict] = {}

        def make(name: str) -> None:
            try:
                results[name] = create_vm(api, name)
            except Exception as exc:  # reported by the assertion below, not as a thread warning
                results[name] = {"state": "error", "error": str(exc)}

        threads = [threading.Thread(target=make, args=(n,)) for n in ("e2e-spread-a", "e2e-spread-b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert all(r["state"] == "succeeded" for r in results.values()), results
        placed = {api.call("GET", f"/vms/{n}").json()["vm"]["host"]["name"] for n in results}
        assert placed == {h["name"] for h in hosts}

        third = api.call("POST", "/vms", {"name": "e2e-spread-c", "image": "debian12", "flavor": "small",
                                          "networks": [{"network": "lab"}]})
        assert third.status_code == 409
        assert "no host has room" in third.json()["error"]["message"]
    finally:
        for name in ("e2e-spread-a", "e2e-spread-b"):
            if api.call("GET", f"/vms/{name}").status_code == 200:
                destroy_vm(api, name)
        for h in hosts:
            api.call("PATCH", f"/hosts/{h['name']}", {"reserved_memory_mib": 0}, expect=200)


def test_silent_host_goes_down_and_comes_back(cloud: LabCloud, api: Api) -> None:
    before = api.call("GET", "/hosts", expect=200).json()["hosts"]
    vms_before = api.call("GET", "/vms", expect=200).json()["vms"]
    h2 = _lab_host(cloud, "h2")
    cloud.stop_agent(h2)
    try:
        deadline = time.monotonic() + 30
        state = "up"
        while time.monotonic() < deadline and state != "down":
            state = api.call("GET", "/hosts/h2", expect=200).json()["host"]["state"]
            time.sleep(1)
        assert state == "down", "h2 not marked down within 30 s of its agent stopping"
    finally:
        cloud.start_agent(h2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if api.call("GET", "/hosts/h2", expect=200).json()["host"]["state"] == "up":
            break
        time.sleep(1)
    after = api.call("GET", "/hosts", expect=200).json()["hosts"]
    assert [(h["id"], h["name"], h["state"]) for h in after] == [(h["id"], h["name"], "up") for h in before]
    assert [v["id"] for v in api.call("GET", "/vms", expect=200).json()["vms"]] == [v["id"] for v in vms_before]


def test_virsh_destroy_by_hand_shows_within_seconds(cloud: LabCloud, api: Api, cleanup: list[str]) -> None:
    cleanup.append("e2e-byhand")
    assert create_vm(api, "e2e-byhand", host="h1")["state"] == "succeeded"
    vm = api.call("GET", "/vms/e2e-byhand", expect=200).json()["vm"]
    _lab_host(cloud, "h1").virsh("destroy", vm["id"])
    started = time.monotonic()
    while api.call("GET", "/vms/e2e-byhand", expect=200).json()["vm"]["state"] != "shutoff":
        assert time.monotonic() - started < 10, "the inventory did not see the VM shut off within 10 s"
        time.sleep(0.25)
    assert destroy_vm(api, "e2e-byhand")["state"] == "succeeded"


def test_nothing_left_in_libvirt_after_destroys(cloud: LabCloud) -> None:
    for host in cloud.lab.hosts:
        assert host.virsh("list", "--all", "--name").strip() == ""
