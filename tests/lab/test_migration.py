"""Live and offline migration between lab hosts, failures, cancel, maintenance and libvirt TLS."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from lab.cloud import Api, LabCloud
from lab.hosts import LabHost
from tests.lab.conftest import create_vm, destroy_vm, ping_until, wait_guest_agent

pytestmark = pytest.mark.lab


def _host(cloud: LabCloud, name: str) -> LabHost:
    return next(h for h in cloud.lab.hosts if h.name == name)


def _domains(host: LabHost) -> list[str]:
    return [n for n in host.virsh("list", "--all", "--uuid").split() if n]


def _vm(api: Api, name: str) -> dict:
    return api.call("GET", f"/vms/{name}", expect=200).json()["vm"]


def _agent(host: LabHost, uuid: str, command: dict) -> dict:
    out = host.virsh("qemu-agent-command", uuid, json.dumps(command))
    return json.loads(out)["return"]


def _write_guest_file(host: LabHost, uuid: str, path: str, text: str) -> None:
    handle = _agent(host, uuid, {"execute": "guest-file-open", "arguments": {"path": path, "mode": "w"}})
    _agent(host, uuid, {"execute": "guest-file-write",
                        "arguments": {"handle": handle, "buf-b64": base64.b64encode(text.encode()).decode()}})
    _agent(host, uuid, {"execute": "guest-file-close", "arguments": {"handle": handle}})


def _read_guest_file(host: LabHost, uuid: str, path: str) -> str:
    handle = _agent(host, uuid, {"execute": "guest-file-open", "arguments": {"path": path, "mode": "r"}})
    data = _agent(host, uuid, {"execute": "guest-file-read", "arguments": {"handle": handle, "count": 4096}})
    _agent(host, uuid, {"execute": "guest-file-close", "arguments": {"handle": handle}})
    return base64.b64decode(data["buf-b64"]).decode()


def _migrate(api: Api, name: str, body: dict) -> dict:
    return api.call("POST", f"/vms/{name}/migrate", body, expect=202).json()["task"]


class Pinger:
    """Pings an address every 0.2 s from the lab switch; at most 120 s, stopped by SIGINT."""

    def __init__(self, address: str) -> None:
        self.proc = subprocess.Popen(["ping", "-n", "-i", "0.2", "-W", "1", "-w", "120", address],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> float:
        """Stop pinging; return the seconds of lost answers (lost packets x 0.2 s)."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=10)
        found = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert found, out
        sent, received = int(found.group(1)), int(found.group(2))
        assert sent > 20, out
        return (sent - received) * 0.2


def _live_migration_keeps_guest(cloud: LabCloud, api: Api, cleanup: list[str], name: str, ip: str,
                                storage: str) -> None:
    cleanup.append(name)
    task = create_vm(api, name, ip=ip, host="h1", storage=storage)
    assert task["state"] == "succeeded", task["error"]
    uuid = _vm(api, name)["id"]
    h1, h2 = _host(cloud, "h1"), _host(cloud, "h2")
    assert ping_until(ip) and wait_guest_agent(api, name) is not None
    _write_guest_file(h1, uuid, "/root/before-migration", f"written on h1 {uuid}")
    pinger = Pinger(ip)
    time.sleep(2)
    migration = api.wait_task(_migrate(api, name, {"host": "h2", "live": True})["id"], timeout=600)
    time.sleep(2)
    lost = pinger.stop()
    assert migration["state"] == "succeeded", migration["error"]
    assert lost <= 2.0, f"{lost:.1f} s of pings lost during the migration"
    assert _vm(api, name)["host"]["name"] == "h2"
    assert uuid not in _domains(h1)
    assert h2.virsh("domstate", uuid).strip() == "running"
    assert _read_guest_file(h2, uuid, "/root/before-migration") == f"written on h1 {uuid}"
    if storage == "local":
        assert uuid not in h1.virsh("vol-list", "labcloud"), "source disks left behind"
    assert destroy_vm(api, name)["state"] == "succeeded"


def test_live_migration_over_shared_storage(cloud: LabCloud, api: Api, cleanup: list[str]) -> None:
    _live_migration_keeps_guest(cloud, api, cleanup, "mig-shared", "10.213.0.130", "shared")


def test_live_migration_copying_local_disks(cloud: LabCloud, api: Api, cleanup: list[str]) -> None:
    _live_migration_keeps_guest(cloud, api, cleanup, "mig-local", "10.213.0.131", "local")


def test_offline_migration_of_stopped_vm(cloud: LabCloud, api: Api, cleanup: list[str]) -> None:
    cleanup.extend(["mig-offline"])
    ip = "10.213.0.132"
    assert create_vm(api, "mig-offline", ip=ip, host="h1")["state"] == "succeeded"
    uuid = _vm(api, "mig-offline")["id"]
    task = api.call("POST", "/vms/mig-offline/poweroff", {}, expect=202).json()["task"]
    assert api.wait_task(task["id"])["state"] == "succeeded"
    moved = api.wait_task(_migrate(api, "mig-offline", {"host": "h2"})["id"], timeout=600)
    assert moved["state"] == "succeeded", moved["error"]
    assert moved["result"]["live"] is False
    assert uuid not in _domains(_host(cloud, "h1"))
    assert uuid not in _host(cloud, "h1").virsh("vol-list", "labcloud")
    start = api.call("POST", "/vms/mig-offline/start", {}, expect=202).json()["task"]
    assert api.wait_task(start["id"])["state"] == "succeeded"
    assert _host(cloud, "h2").virsh("domstate", uuid).strip() == "running"
    assert ping_until(ip), "the migrated VM does not answer on its address"
    assert destroy_vm(api, "mig-offline")["state"] == "succeeded"


def _wait_migrating(api: Api, task_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = api.call("GET", f"/tasks/{task_id}", expect=200).json()["task"]
        if task["state"] in ("succeeded", "failed") or "MiB left" in task["message"]:
            return task
        time.sleep(0.3)
    raise AssertionError("the migration never started transferring")


def test_destination_libvirtd_killed_during_migration(cloud: LabCloud, api: Api, cleanup: list[str]) -> None:
    cleanup.extend(["mig-kill"])
    assert create_vm(api, "mig-kill", host="h1", storage="shared")["state"] == "succeeded"
    uuid = _vm(api, "mig-kill")["id"]
    h1, h2 = _host(cloud, "h1"), _host(cloud, "h2")
    task = _migrate(api, "mig-kill", {"host": "h2", "bandwidth_mib": 2})
    assert _wait_migrating(api, task["id"])["state"] == "running"
    pid = h2.daemon_pid("libvirtd")
    assert pid is not None
    subprocess.run(["kill", "-9", str(pid)], check=True)
    try:
        done = api.wait_task(task["id"], timeout=300)
    finally:
        h2.start_libvirtd()
    assert done["state"] == "failed"
    # libvirt's own words, then where the VM is and what to do.
    assert re.search(r"libvirt: \S+", done["error"]), done["error"]
    assert "still runs on h1" in done["error"] and "retry" in done["error"], done["error"]
    assert h1.virsh("domstate", uuid).strip() == "running"
    deadline = time.monotonic() + 30
    while uuid in _domains(h2) and time.monotonic() < deadline:
        time.sleep(1)
    assert uuid not in _domains(h2), "the destination kept a copy"
    assert _vm(api, "mig-kill")["host"]["name"] == "h1"
    assert destroy_vm(api, "mig-kill")["state"] == "succeeded"


def test_cancel_during_long_migration(cloud: LabCloud, api: Api, cleanup: list[str]) -> None:
    cleanup.extend(["mig-cancel"])
    assert create_vm(api, "mig-cancel", host="h1")["state"] == "succeeded"
    uuid = _vm(api, "mig-cancel")["id"]
    task = _migrate(api, "mig-cancel", {"host": "h2", "bandwidth_mib": 1})
    assert _wait_migrating(api, task["id"])["state"] == "running"
    api.call("POST", f"/tasks/{task['id']}/cancel", {}, expect=200)
    done = api.wait_task(task["id"], timeout=120)
    assert done["state"] == "failed" and "cancelled" in done["error"], done
    assert _host(cloud, "h1").virsh("domstate", uuid).strip() == "running"
    assert uuid not in _domains(_host(cloud, "h2"))
    assert uuid not in _host(cloud, "h2").virsh("vol-list", "labcloud"), "destination disks left behind"
    assert _vm(api, "mig-cancel")["host"]["name"] == "h1"
    assert destroy_vm(api, "mig-cancel")["state"] == "succeeded"


def test_maintenance_drains_host(cloud: LabCloud, api: Api, cleanup: list[str]) -> None:
    cleanup.extend(["drain-a", "drain-b", "drain-new"])
    for name in ("drain-a", "drain-b"):
        assert create_vm(api, name, host="h1")["state"] == "succeeded"
    out = api.call("POST", "/hosts/h1/maintenance", {"enabled": True}, expect=202).json()
    try:
        newcomer = create_vm(api, "drain-new")  # created while the drain runs
        drained = api.wait_task(out["task"]["id"], timeout=900)
        assert drained["state"] == "succeeded", drained["error"]
        assert newcomer["state"] == "succeeded"
        for name in ("drain-a", "drain-b", "drain-new"):
            vm = _vm(api, name)
            assert vm["host"]["name"] == "h2" and vm["state"] == "running", vm
        assert _domains(_host(cloud, "h1")) == []
        assert api.call("GET", "/hosts/h1", expect=200).json()["host"]["state"] == "maintenance"
    finally:
        api.call("POST", "/hosts/h1/maintenance", {"enabled": False}, expect=200)
    assert api.call("GET", "/hosts/h1", expect=200).json()["host"]["state"] == "up"


def _virsh_tls(pkipath: Path, address: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", f"qemu+tls://{address}/system?pkipath={pkipath}", "hostname"],
                          capture_output=True, text=True, timeout=60)


def test_libvirt_refuses_clients_without_a_labcloud_host_certificate(cloud: LabCloud, tmp_path: Path) -> None:
    h1, h2 = _host(cloud, "h1"), _host(cloud, "h2")
    # A positive control: h1's own labcloud certificate is accepted by h2.
    assert _virsh_tls(h1.root / "etc" / "pki", h2.address).returncode == 0
    # A certificate from another CA is refused.
    own = tmp_path / "other-ca"
    own.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(own / "clientkey.pem"), "-out", str(own / "clientcert.pem"), "-days", "1",
                    "-subj", "/CN=labcloud-host:intruder"], check=True, capture_output=True)
    (own / "cacert.pem").write_bytes((h1.root / "etc" / "pki" / "cacert.pem").read_bytes())
    refused = _virsh_tls(own, h2.address)
    assert refused.returncode != 0
    # The controller's certificate is from the right CA but is no host's: refused too.
    ctl = tmp_path / "controller"
    ctl.mkdir()
    pki = cloud.data_dir / "pki"
    (ctl / "cacert.pem").write_bytes((pki / "ca.pem").read_bytes())
    (ctl / "clientcert.pem").write_bytes((pki / "client.pem").read_bytes())
    (ctl / "clientkey.pem").write_bytes((pki / "client.key").read_bytes())
    refused = _virsh_tls(ctl, h2.address)
    assert refused.returncode != 0, refused.stdout
    # And nothing listens for plain TCP.
    plain = subprocess.run(["virsh", "-c", f"qemu+tcp://{h2.address}/system", "hostname"],
                           capture_output=True, text=True, timeout=60)
    assert plain.returncode != 0


def test_evacuate_fenced_host_and_stale_copy_never_starts(cloud: LabCloud, api: Api, cleanup: list[str]) -> None:
    cleanup.extend(["evac"])
    ip = "10.213.0.133"
    assert create_vm(api, "evac", ip=ip, host="h1", storage="shared")["state"] == "succeeded"
    uuid = _vm(api, "evac")["id"]
    h1, h2 = _host(cloud, "h1"), _host(cloud, "h2")
    # h1 loses power: its agent, its guest and its libvirtd all stop.
    cloud.stop_agent(h1)
    h1.virsh("destroy", uuid)
    h1.stop_libvirtd()
    try:
        deadline = time.monotonic() + 40
        while api.call("GET", "/hosts/h1", expect=200).json()["host"]["state"] != "down":
            assert time.monotonic() < deadline, "h1 not marked down"
            time.sleep(1)
        refused = api.call("POST", "/hosts/h1/evacuate", {})
        assert refused.status_code == 400 and "confirm_fenced" in refused.json()["error"]["message"]
        task = api.call("POST", "/hosts/h1/evacuate", {"confirm_fenced": True}, expect=202).json()["task"]
        done = api.wait_task(task["id"], timeout=300)
        assert done["state"] == "succeeded", done["error"]
        vm = _vm(api, "evac")
        assert vm["host"]["name"] == "h2" and vm["state"] == "running"
        assert ping_until(ip), "the evacuated VM does not answer on its address"
    finally:
        h1.start_libvirtd()
        cloud.start_agent(h1)
    # h1 is back: its stale copy is removed, not started, and h2 keeps running the VM.
    deadline = time.monotonic() + 60
    while uuid in _domains(h1):
        assert time.monotonic() < deadline, "the stale copy on h1 was not removed"
        time.sleep(1)
    assert h2.virsh("domstate", uuid).strip() == "running"
    assert _vm(api, "evac")["host"]["name"] == "h2"
    assert destroy_vm(api, "evac")["state"] == "succeeded"
