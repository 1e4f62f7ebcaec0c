"""Issue 7 on the lab: a domain defined by hand is listed as unmanaged, adopted, and then behaves as any VM."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from lxml import etree
from lxml.builder import E

from lab.cloud import Api, LabCloud
from lab.hosts import LabHost
from tests.lab.conftest import create_vm, destroy_vm

pytestmark = pytest.mark.lab

POOL = "labcloud"
ADOPT_IP = "10.213.0.166"
ADOPT_MAC = "52:54:00:7e:00:66"


def _host(cloud: LabCloud, name: str) -> LabHost:
    return next(h for h in cloud.lab.hosts if h.name == name)


def _state(host: LabHost, uuid_: str) -> str:
    proc = host.run(["virsh", "-q", "-c", "qemu:///system", "domstate", uuid_], check=False)
    return proc.stdout.strip() if proc.returncode == 0 else "absent"


def _ensure_base(cloud: LabCloud, host: LabHost, sha: str) -> str:
    """Make sure the catalog image is cached in the host's pool, as a create would have left it."""
    name = f"base-{sha}.qcow2"
    if host.run(["virsh", "-q", "-c", "qemu:///system", "vol-info", "--pool", POOL, name], check=False).returncode:
        target = host.pool_dir / POOL / name
        shutil.copyfile(cloud.data_dir / "images" / f"{sha}.qcow2", target)
        target.chmod(0o644)
        host.virsh("pool-refresh", POOL)
    return name


def _domain_xml(uuid_: str, name: str, disk: str) -> bytes:
    """A minimal domain as an operator would write it: no labcloud metadata, one disk, one bridge NIC."""
    dom = E.domain(
        E.name(name), E.uuid(uuid_), E.memory("512", unit="MiB"), E.vcpu("1"),
        E.os(E.type("hvm", arch="x86_64")),
        E.devices(
            E.disk(E.driver(name="qemu", type="qcow2"), E.source(file=disk), E.target(dev="vda", bus="virtio"),
                   type="file", device="disk"),
            E.interface(E.mac(address=ADOPT_MAC), E.source(bridge="br0"), E.model(type="virtio"), type="bridge"),
            E.serial(E.target(port="0"), type="pty"),
        ),
        type="qemu",
    )
    return etree.tostring(dom, pretty_print=True)


def _wait(what: str, check, timeout: float = 30):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout:.0f} s")


def _task(api: Api, method: str, path: str, body: dict | None = None, timeout: float = 600) -> dict:
    task = api.call(method, path, body if body is not None else {}, expect=202).json()["task"]
    return api.wait_task(task["id"], timeout=timeout)


def test_domain_defined_by_hand_is_unmanaged_then_adopted_and_managed(cloud: LabCloud, api: Api) -> None:
    h1, h2 = _host(cloud, "h1"), _host(cloud, "h2")
    image = api.call("GET", "/images", expect=200).json()["images"][0]
    base = _ensure_base(cloud, h1, image["sha256"])
    dom_uuid = str(uuid.uuid4())
    volume = f"byhand-{dom_uuid[:8]}.qcow2"
    xml_path = h1.root / f"byhand-{dom_uuid[:8]}.xml"
    try:
        h1.virsh("vol-create-as", POOL, volume, "4G", "--format", "qcow2", "--backing-vol", base,
                 "--backing-vol-format", "qcow2")
        disk = h1.virsh("vol-path", "--pool", POOL, volume).strip()
        xml_path.write_bytes(_domain_xml(dom_uuid, "ByHand", disk))
        h1.virsh("define", str(xml_path))

        listed = _wait("the unmanaged domain listed", lambda: [
            u for u in api.call("GET", "/hosts/h1/unmanaged", expect=200).json()["unmanaged"]
            if u["uuid"] == dom_uuid])
        assert listed[0]["name"] == "ByHand" and listed[0]["state"] == "shutoff"
        assert dom_uuid not in [v["id"] for v in api.call("GET", "/vms", expect=200).json()["vms"]]

        task = _task(api, "POST", f"/unmanaged/{dom_uuid}/adopt",
                     {"name": "adopted", "networks": [{"network": "lab", "ip": ADOPT_IP}]})
        assert task["state"] == "succeeded", task["error"]
        vm = api.call("GET", "/vms/adopted", expect=200).json()["vm"]
        assert (vm["id"], vm["host"]["name"], vm["ips"], vm["nics"][0]["mac"], vm["flavor"]) == (
            dom_uuid, "h1", [ADOPT_IP], ADOPT_MAC, "small")
        held = api.call("GET", "/networks/lab/addresses", expect=200).json()["addresses"]
        assert [a for a in held if a["address"] == ADOPT_IP], held
        assert dom_uuid not in str(api.call("GET", "/unmanaged", expect=200).json())
        assert f"{dom_uuid}-root.qcow2" in h1.virsh("vol-list", POOL)  # labcloud's layout now

        # A VM like any other: start, power off, start, migrate live.
        assert _task(api, "POST", "/vms/adopted/start")["state"] == "succeeded"
        assert _state(h1, dom_uuid) == "running"
        assert _task(api, "POST", "/vms/adopted/poweroff")["state"] == "succeeded"
        assert _state(h1, dom_uuid) == "shut off"
        assert _task(api, "POST", "/vms/adopted/start")["state"] == "succeeded"
        moved = _task(api, "POST", "/vms/adopted/migrate", {"host": "h2"})
        assert moved["state"] == "succeeded", moved["error"]
        assert (_state(h2, dom_uuid), _state(h1, dom_uuid)) == ("running", "absent")
        vm = api.call("GET", "/vms/adopted", expect=200).json()["vm"]
        assert (vm["host"]["name"], vm["state"], vm["ips"]) == ("h2", "running", [ADOPT_IP])

        assert destroy_vm(api, "adopted")["state"] == "succeeded"
        assert _state(h2, dom_uuid) == "absent"
        held = api.call("GET", "/networks/lab/addresses", expect=200).json()["addresses"]
        assert not [a for a in held if a["address"] == ADOPT_IP]
    finally:
        if api.call("GET", "/vms/adopted").status_code == 200:
            destroy_vm(api, "adopted")
        for host in (h1, h2):
            if _state(host, dom_uuid) != "absent":
                host.run(["virsh", "-c", "qemu:///system", "destroy", dom_uuid], check=False)
                host.run(["virsh", "-c", "qemu:///system", "undefine", dom_uuid], check=False)
            for name in (volume, f"{dom_uuid}-root.qcow2"):
                host.run(["virsh", "-c", "qemu:///system", "vol-delete", "--pool", POOL, name], check=False)
        Path(xml_path).unlink(missing_ok=True)


def _virsh_domains(host: LabHost) -> dict[str, str]:
    """Return UUID -> state of every domain on a host, as libvirt says."""
    out = host.virsh("list", "--all", "--uuid").split()
    return {u: _state(host, u) for u in out}


def assert_inventory_matches_libvirt(cloud: LabCloud, api: Api) -> None:
    """Every VM is on its host in its state, every domain is a VM, every held address belongs to a VM."""
    vms = api.call("GET", "/vms", expect=200).json()["vms"]
    libvirt_states = {"running": "running", "shutoff": "shut off", "paused": "paused"}
    on_hosts = {h.name: _virsh_domains(h) for h in cloud.lab.hosts}
    for vm in vms:
        assert on_hosts[vm["host"]["name"]].get(vm["id"]) == libvirt_states.get(vm["state"]), (vm, on_hosts)
    inventoried = {vm["id"] for vm in vms}
    stray = {u for doms in on_hosts.values() for u in doms} - inventoried
    assert not stray, f"domains not in the inventory: {stray}"
    held = {a["address"] for a in api.call("GET", "/networks/lab/addresses", expect=200).json()["addresses"]}
    assert held == {ip for vm in vms for ip in vm["ips"]}


def _wait_task(api: Api, task_id: str, check, timeout: float = 300) -> dict:  # type: ignore[no-untyped-def]
    return _wait(f"task {task_id} condition", lambda: (lambda t: t if check(t) else None)(
        api.call("GET", f"/tasks/{task_id}", expect=200).json()["task"]), timeout)


def test_controller_killed_during_a_create_resolves_the_task(cloud: LabCloud, api: Api, cleanup: list[str]) -> None:
    cleanup.append("crash-ctl")
    cloud.stop_controller()
    cloud.start_controller({"LABCLOUD_FAULT_CREATE_PAUSE_S": "300"})
    try:
        task = create_vm(api, "crash-ctl", wait=False)
        _wait_task(api, task["id"], lambda t: "fault injection" in t["message"], timeout=600)
        vm = api.call("GET", "/vms/crash-ctl", expect=200).json()["vm"]
        assert vm["state"] == "building"  # the domain runs; the task has not recorded it
        assert _state(_host(cloud, vm["host"]["name"]), vm["id"]) == "running"
        cloud.kill_controller()
    finally:
        cloud.stop_controller()  # whatever happened, continue with a controller without fault injection
        cloud.start_controller()
    done = api.call("GET", f"/tasks/{task['id']}", expect=200).json()["task"]
    assert done["state"] == "succeeded", done
    assert done["result"]["vm_id"] == vm["id"] and done["result"]["addresses"] == vm["ips"]
    assert api.call("GET", "/vms/crash-ctl", expect=200).json()["vm"]["state"] == "running"
    assert_inventory_matches_libvirt(cloud, api)
    assert destroy_vm(api, "crash-ctl")["state"] == "succeeded"
    assert_inventory_matches_libvirt(cloud, api)


def test_agent_killed_during_a_create_the_task_ends_resolved(cloud: LabCloud, api: Api, cleanup: list[str]) -> None:
    cleanup.append("crash-agent")
    h1 = _host(cloud, "h1")
    cloud.stop_agent(h1)
    cloud.start_agent(h1, {"LABCLOUD_AGENT_FAULT_CREATE_PAUSE_S": "60"})
    try:
        task = create_vm(api, "crash-agent", host="h1", wait=False)
        _wait(f"domain {task['vm_id']} defined on h1", lambda: _state(h1, task["vm_id"]) == "shut off", timeout=600)
        cloud.kill_agent(h1)  # between define and start
        time.sleep(3)
        assert api.call("GET", f"/tasks/{task['id']}", expect=200).json()["task"]["state"] == "running"
    finally:
        cloud.stop_agent(h1)
        cloud.start_agent(h1)  # without fault injection
    done = api.wait_task(task["id"], timeout=300)
    assert done["state"] == "succeeded", done["error"]
    assert _state(h1, task["vm_id"]) == "running"
    assert api.call("GET", "/vms/crash-agent", expect=200).json()["vm"]["state"] == "running"
    assert_inventory_matches_libvirt(cloud, api)
    assert destroy_vm(api, "crash-agent")["state"] == "succeeded"
    assert_inventory_matches_libvirt(cloud, api)


def test_create_on_a_full_pool_fails_naming_the_lack_of_space_and_leaves_nothing(
        cloud: LabCloud, api: Api, cleanup: list[str]) -> None:
    cleanup.append("full-pool")
    h1 = _host(cloud, "h1")
    pool_path = "/var/lib/libvirt/images/labcloud"  # as the agent sees it, inside h1's mount namespace
    assert not [v for v in api.call("GET", "/vms", expect=200).json()["vms"] if v["host"]["name"] == "h1"]
    image = h1.root / "full-pool.img"
    subprocess.run(["truncate", "-s", "64M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    loop = subprocess.run(["losetup", "--find", "--show", str(image)], check=True, capture_output=True,
                          text=True).stdout.strip()
    mounted = False
    ratio = api.call("GET", "/hosts/h1", expect=200).json()["host"]["disk_ratio"]
    try:
        h1.run(["mount", loop, pool_path])
        mounted = True
        h1.virsh("pool-refresh", POOL)
        files_before = h1.run(["ls", "-A", pool_path]).stdout.split()
        # Let placement pass on the stale free-space figure, so the agent meets the full filesystem.
        api.call("PATCH", "/hosts/h1", {"disk_ratio": 1000.0}, expect=200)
        task = create_vm(api, "full-pool", host="h1")
        assert task["state"] == "failed"
        assert "not enough space" in task["error"] and "free space" in task["error"], task["error"]
        assert api.call("GET", "/vms/full-pool").status_code == 404
        assert "full-pool" not in h1.virsh("list", "--all", "--name")
        assert h1.run(["ls", "-A", pool_path]).stdout.split() == files_before
        assert_inventory_matches_libvirt(cloud, api)  # and no address held for it
    finally:
        api.call("PATCH", "/hosts/h1", {"disk_ratio": ratio})
        if mounted:
            h1.run(["umount", pool_path], check=False)
        subprocess.run(["losetup", "-d", loop], check=False)
        h1.virsh("pool-refresh", POOL)
        image.unlink(missing_ok=True)


def _at_once(calls: list) -> list:  # type: ignore[type-arg]
    """Run the calls in one thread each, released together; return their results (or exceptions) in order."""
    start = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # reported by the caller's assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    return results


def test_twenty_creates_and_five_destroys_at_once(cloud: LabCloud, api: Api, cleanup: list[str]) -> None:
    new = [f"conc-{i:02d}" for i in range(20)]
    old = [f"conc-old-{i}" for i in range(5)]
    cleanup.extend(new + old)
    if not [f for f in api.call("GET", "/flavors", expect=200).json()["flavors"] if f["name"] == "tiny"]:
        api.call("POST", "/flavors", {"name": "tiny", "vcpus": 1, "memory_mib": 256, "disk_gib": 4}, expect=201)

    def client() -> Api:  # one session per thread
        return Api(api.url, api.ca, api.token)

    def create(name: str):  # type: ignore[no-untyped-def]
        return lambda: client().call("POST", "/vms", {"name": name, "image": "debian12", "flavor": "tiny",
                                                      "networks": [{"network": "lab"}]})

    def destroy(name: str):  # type: ignore[no-untyped-def]
        return lambda: client().call("DELETE", f"/vms/{name}")

    ratios = {h["name"]: h["cpu_ratio"] for h in api.call("GET", "/hosts", expect=200).json()["hosts"]}
    try:
        for name in ratios:  # lab hosts report 2 CPUs: room for 25 one-vCPU guests
            api.call("PATCH", f"/hosts/{name}", {"cpu_ratio": 16.0}, expect=200)
        for resp in _at_once([create(n) for n in old]):
            assert resp.status_code == 202, resp.text
            assert api.wait_task(resp.json()["task"]["id"], timeout=600)["state"] == "succeeded"

        started = time.monotonic()
        answers = _at_once([create(n) for n in new] + [destroy(n) for n in old])
        # Every accepted task ends before anything is asserted, so the cleanup finds no busy VM.
        tasks = [api.wait_task(a.json()["task"]["id"], timeout=900) for a in answers
                 if not isinstance(a, Exception) and a.status_code == 202]
    finally:
        for name, ratio in ratios.items():
            api.call("PATCH", f"/hosts/{name}", {"cpu_ratio": ratio})
    problems = [a if isinstance(a, Exception) else a.text for a in answers
                if isinstance(a, Exception) or a.status_code != 202]
    assert not problems, problems
    print(f"\n[concurrency] 20 creates + 5 destroys ended in {time.monotonic() - started:.1f} s")
    failed = [(t["vm_name"], t["error"]) for t in tasks if t["state"] != "succeeded"]
    assert not failed, failed
    assert "database is locked" not in (cloud.log_dir / "controller.log").read_text()

    vms = {v["name"]: v for v in api.call("GET", "/vms", expect=200).json()["vms"]}
    assert set(new) <= set(vms) and not set(old) & set(vms)
    addresses = [ip for n in new for ip in vms[n]["ips"]]
    assert len(addresses) == len(set(addresses)) == 20, addresses
    assert_inventory_matches_libvirt(cloud, api)

    # 20 TCG guests on 2 cores: remove them at once.
    for resp in _at_once([destroy(n) for n in new]):
        assert resp.status_code == 202, resp.text
        assert api.wait_task(resp.json()["task"]["id"], timeout=600)["state"] == "succeeded"
    assert_inventory_matches_libvirt(cloud, api)
