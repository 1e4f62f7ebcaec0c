"""The agent's network verbs: the Linux 802.1Q backend (made idempotently, removed only when unused),
switch backends, and re-addressing a stopped VM."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from hostagent import seed
from hostagent.domainxml import VlanRecord, parse_xml, vlan_records
from hostagent.errors import VerbError
from hostagent.hypervisor import Hypervisor
from hostagent.network import LinuxVlans
from hostagent.vms import Vms


class FakeIp:
    """Stands in for iproute2: keeps a set of links, fails like `ip` does on duplicates and absent links."""

    def __init__(self, links: set[str] | None = None) -> None:
        self.links = set(links or {"lo", "eth0"})
        self.masters: dict[str, str] = {}
        self.mtu: dict[str, int] = {}
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        assert argv[0] == "ip", argv
        args = argv[1:]
        ok = subprocess.CompletedProcess(argv, 0, "", "")
        fail = subprocess.CompletedProcess(argv, 1, "", "Cannot find device")
        if args[:3] == ["link", "show", "dev"]:
            return ok if args[3] in self.links else fail
        if args[:2] == ["link", "add"]:
            name = args[args.index("name") + 1] if "name" in args else args[2]
            if name in self.links:
                return subprocess.CompletedProcess(argv, 2, "", "RTNETLINK answers: File exists")
            self.links.add(name)
            return ok
        if args[:3] == ["link", "set", "dev"]:
            if args[3] not in self.links:
                return fail
            if "master" in args:
                self.masters[args[3]] = args[args.index("master") + 1]
            if "mtu" in args:
                self.mtu[args[3]] = int(args[args.index("mtu") + 1])
            return ok
        if args[:3] == ["link", "del", "dev"]:
            if args[3] not in self.links:
                return fail
            self.links.discard(args[3])
            return ok
        raise AssertionError(f"unexpected command {argv}")

    def adds(self) -> list[list[str]]:
        """Return the `ip link add` commands run so far."""
        return [c for c in self.calls if c[1:3] == ["link", "add"]]


V100 = VlanRecord(interface="eth0", vlan_id=100, bridge="brv100", mtu=1400)


def test_ensure_makes_device_and_bridge_and_is_idempotent() -> None:
    ip = FakeIp()
    vlans = LinuxVlans(ip)
    vlans.ensure(V100)
    assert {"eth0.100", "brv100"} <= ip.links
    assert ip.masters == {"eth0.100": "brv100"}
    assert ip.mtu == {"eth0.100": 1400, "brv100": 1400}
    assert len(ip.adds()) == 2
    vlans.ensure(V100)  # a re-run (agent restarted, second VM) adds nothing and does not fail
    assert len(ip.adds()) == 2
    assert {"eth0.100", "brv100"} <= ip.links


def test_ensure_completes_a_half_made_vlan() -> None:
    ip = FakeIp({"lo", "eth0", "eth0.100"})  # e.g. a crash between the two `ip link add`
    LinuxVlans(ip).ensure(V100)
    assert [c[3] for c in ip.adds()] == ["brv100"]
    assert ip.masters == {"eth0.100": "brv100"}


def test_ensure_without_the_physical_interface_is_a_clear_error() -> None:
    ip = FakeIp({"lo"})
    with pytest.raises(VerbError, match="interface eth0 of VLAN 100 does not exist") as info:
        LinuxVlans(ip).ensure(V100)
    assert info.value.status == 409
    assert ip.adds() == []


def test_release_removes_only_unused_non_persistent_vlans() -> None:
    ip = FakeIp()
    vlans = LinuxVlans(ip)
    v200 = VlanRecord(interface="eth0", vlan_id=200, bridge="brv200")
    kept = VlanRecord(interface="eth0", vlan_id=300, bridge="brv300", persistent=True)
    for v in (V100, v200, kept):
        vlans.ensure(v)
    removed = vlans.release_unused([V100, v200, kept], bridges_in_use={"br0", "brv200"})
    assert removed == ["brv100", "eth0.100"]
    assert {"eth0.200", "brv200", "eth0.300", "brv300"} <= ip.links
    assert "eth0.100" not in ip.links and "brv100" not in ip.links
    assert vlans.release_unused([V100], bridges_in_use=set()) == []  # already gone: nothing to do, no error


class FakeStorage:
    """Volumes without a pool: paths only (what Vms.create and destroy need)."""

    def create_overlay(self, uuid: str, sha256: str, size_bytes: int) -> str:
        return f"/var/lib/libvirt/images/{uuid}-root.qcow2"

    def write_seed(self, uuid: str, data: bytes) -> str:
        return f"/var/lib/libvirt/images/{uuid}-seed.iso"

    def delete_vm_volumes(self, uuid: str) -> list[str]:
        return []


@pytest.fixture
def agent_vms() -> Iterator[tuple[Vms, FakeIp]]:
    """The agent's VM verbs on libvirt's test driver with a fake `ip`; domains are removed afterwards."""
    hv = Hypervisor("test:///default")
    ip = FakeIp()
    storage: Any = FakeStorage()
    vms = Vms(hv, storage, "qemu", switch="linux", vlans=LinuxVlans(ip))
    made: list[str] = []
    vms.made = made  # type: ignore[attr-defined]
    yield vms, ip
    for dom_uuid in made:
        dom = hv.domain(dom_uuid)
        if dom is not None:
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    hv.close()


def vm_spec(name: str, vid: int = 100, persistent: bool = False) -> dict[str, Any]:
    """A create spec with one NIC on VLAN vid."""
    mac = "52:54:00:" + ":".join(uuid.uuid4().hex[i:i + 2] for i in (0, 2, 4))
    return {"uuid": str(uuid.uuid4()), "name": name, "vcpus": 1, "memory_mib": 64, "disk_gib": 1,
            "image_sha256": "ab" * 32, "hostname": name,
            "nics": [{"mac": mac, "bridge": f"brv{vid}", "addresses": ["10.50.0.5/24"], "gateway": None,
                      "dns": [], "type": "vlan", "vlan_id": vid, "interface": "eth0", "mtu": None,
                      "persistent": persistent}]}


def undefine(vms: Vms, spec: dict[str, Any]) -> list[VlanRecord]:
    """Remove a domain the way destroy does (the test driver lacks destroy's NVRAM flag); return its VLANs."""
    dom = vms.hv.domain(spec["uuid"])
    assert dom is not None
    records = vlan_records(dom.XMLDesc(0))
    if dom.isActive():
        dom.destroy()
    dom.undefine()
    return records


def test_agent_removes_the_vlan_when_the_last_vm_on_the_host_leaves(agent_vms: tuple[Vms, FakeIp]) -> None:
    vms, ip = agent_vms
    a, b = vm_spec("vlan-a"), vm_spec("vlan-b")
    for spec in (a, b):
        vms.made.append(spec["uuid"])  # type: ignore[attr-defined]
        vms.create(spec)
    assert {"eth0.100", "brv100"} <= ip.links and len(ip.adds()) == 2  # the second VM reused them
    assert vms.release_vlans(undefine(vms, a)) == []  # b still uses brv100
    assert "brv100" in ip.links
    assert vms.release_vlans(undefine(vms, b)) == ["brv100", "eth0.100"]
    assert "brv100" not in ip.links and "eth0.100" not in ip.links


def test_agent_keeps_a_persistent_vlan(agent_vms: tuple[Vms, FakeIp]) -> None:
    vms, ip = agent_vms
    spec = vm_spec("vlan-p", vid=300, persistent=True)
    vms.made.append(spec["uuid"])  # type: ignore[attr-defined]
    vms.create(spec)
    assert vms.release_vlans(undefine(vms, spec)) == []
    assert {"eth0.300", "brv300"} <= ip.links


def test_ovs_host_tags_the_port_and_creates_nothing(agent_vms: tuple[Vms, FakeIp]) -> None:
    vms, ip = agent_vms
    vms.switch = "ovs"
    spec = vm_spec("vlan-o", vid=200)
    vms.made.append(spec["uuid"])  # type: ignore[attr-defined]
    xml = vms.create(spec)["xml"]
    assert ip.adds() == []
    assert "<virtualport type='openvswitch'" in xml.replace('"', "'")
    assert "<tag id='200'/>" in xml.replace('"', "'")


def test_incoming_migration_makes_the_vlan_only_on_linux_hosts(agent_vms: tuple[Vms, FakeIp]) -> None:
    vms, ip = agent_vms
    nets = [{"bridge": "brv100", "type": "vlan", "vlan_id": 100, "interface": "eth0", "mtu": None, "persistent": 0},
            {"bridge": "br0", "type": "bridge", "vlan_id": None, "interface": None, "mtu": None, "persistent": 0}]
    vms.switch = "ovs"
    vms.ensure_vlans(nets)
    assert ip.adds() == []
    vms.switch = "linux"
    vms.ensure_vlans(nets)
    vms.ensure_vlans(nets)
    assert len(ip.adds()) == 2  # device and bridge, once
    assert {"eth0.100", "brv100"} <= ip.links and "br0" not in ip.links


class SeedStorage(FakeStorage):
    """Keeps seed bytes in memory, like a pool with a seed volume."""

    def __init__(self) -> None:
        self.seeds: dict[str, bytes] = {}

    def write_seed(self, uuid: str, data: bytes) -> str:
        self.seeds[uuid] = data
        return super().write_seed(uuid, data)

    def volume(self, name: str) -> object | None:
        return object() if any(name.startswith(u) and name.endswith("seed.iso") for u in self.seeds) else None

    def read_volume(self, name: str) -> tuple[int, Iterator[bytes]]:
        data = next(v for u, v in self.seeds.items() if name.startswith(u))
        return len(data), iter([data])


def test_readdressing_a_stopped_vm_rewrites_seed_and_filter(agent_vms: tuple[Vms, FakeIp]) -> None:
    vms, _ip = agent_vms
    storage = SeedStorage()
    vms.storage, vms.storages = storage, {"local": storage}  # type: ignore[assignment, dict-item]
    spec = vm_spec("readdr")
    spec["nics"][0].update(type="bridge", bridge="br0", vlan_id=None, interface=None)
    vms.made.append(spec["uuid"])  # type: ignore[attr-defined]
    vms.create(spec)
    with pytest.raises(VerbError, match="shut it down"):
        vms.renetwork(spec["uuid"], {"nics": spec["nics"]})
    dom = vms.hv.domain(spec["uuid"])
    assert dom is not None
    dom.destroy()
    first = seed.read_seed_bytes(storage.seeds[spec["uuid"]])
    spec["nics"][0]["addresses"] = ["10.50.0.77/24"]
    out = vms.renetwork(spec["uuid"], {"nics": spec["nics"], "hostname": "readdr"})
    files = seed.read_seed_bytes(storage.seeds[spec["uuid"]])
    meta = yaml.safe_load(files["meta-data"])
    assert meta["instance-id"] == out["instance_id"] != yaml.safe_load(first["meta-data"])["instance-id"]
    assert yaml.safe_load(files["network-config"])["ethernets"]["eth0"]["addresses"] == ["10.50.0.77/24"]
    assert files["user-data"] == first["user-data"]
    root = parse_xml(out["xml"])
    assert root.find("./devices/interface/filterref/parameter").get("value") == "10.50.0.77"
