"""Domain XML of labcloud NICs (Open vSwitch tag, MTU, clean-traffic) and re-addressing seeds."""

from __future__ import annotations

from collections.abc import Iterator

import libvirt
import pytest
import yaml

from hostagent import seed
from hostagent.domainxml import DomainSpec, NicSpec, VlanRecord, build_domain, parse_xml, read_metadata, vlan_records
from hostagent.errors import VerbError
from hostagent.network import plan_nics
from hostagent.vms import set_filter_ips

SPEC = DomainSpec(
    uuid="3c2b1a00-0d9e-4b5e-9b7a-2f0e3c4d5a61", name="netvm", vcpus=1, memory_mib=256,
    root_disk="/var/lib/libvirt/images/netvm-root.qcow2", seed_disk="/var/lib/libvirt/images/netvm-seed.iso",
    nics=[NicSpec(mac="52:54:00:00:00:01", bridge="br0", filter_ip="10.0.0.5"),
          NicSpec(mac="52:54:00:00:00:02", bridge="ovsbr0", ovs=True, vlan_tag=100, mtu=1400),
          NicSpec(mac="52:54:00:00:00:03", bridge="brv200")],
    vlans=[VlanRecord(interface="eth0", vlan_id=200, bridge="brv200", mtu=1450, persistent=True)],
    virt_type="qemu", vm_id="vm-9", owner="alice",
)


@pytest.fixture
def conn() -> Iterator[libvirt.virConnect]:
    """A test-driver connection; the domain defined here is undefined afterwards."""
    connection = libvirt.open("test:///default")
    yield connection
    try:
        connection.lookupByUUIDString(SPEC.uuid).undefine()
    except libvirt.libvirtError:
        pass
    connection.close()


def test_nic_elements_validate_and_survive_libvirt(conn: libvirt.virConnect) -> None:
    dom = conn.defineXMLFlags(build_domain(SPEC), libvirt.VIR_DOMAIN_DEFINE_VALIDATE)  # domain.rng accepts it
    root = parse_xml(dom.XMLDesc(0))
    first, ovs, plain = root.findall("./devices/interface")
    assert first.find("filterref").get("filter") == "clean-traffic"
    assert first.find("filterref/parameter").attrib == {"name": "IP", "value": "10.0.0.5"}
    assert ovs.find("virtualport").get("type") == "openvswitch"
    assert ovs.find("vlan/tag").get("id") == "100"
    assert ovs.find("mtu").get("size") == "1400"
    assert ovs.find("source").get("bridge") == "ovsbr0"
    assert plain.find("filterref") is None and plain.find("virtualport") is None
    xml = dom.XMLDesc(0)
    assert vlan_records(xml) == SPEC.vlans
    assert read_metadata(xml) == {"vm_id": "vm-9", "owner": "alice", "created_by": "labcloud"}


@pytest.mark.parametrize(("nic", "message"), [
    (NicSpec(mac="52:54:00:00:00:09", bridge="br0", vlan_tag=100), "needs an Open vSwitch port"),
    (NicSpec(mac="52:54:00:00:00:09", bridge="br0", ovs=True, vlan_tag=4095), "must be 1-4094"),
    (NicSpec(mac="52:54:00:00:00:09", bridge="br0", filter_ip="10.0.0.300"), "10.0.0.300"),
])
def test_bad_nic_specs_are_refused(nic: NicSpec, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_domain(DomainSpec(**{**SPEC.__dict__, "nics": [nic]}))


def nic(kind: str = "bridge", address: str | None = "10.0.0.5/24") -> dict[str, object]:
    """A NIC spec as the controller sends it."""
    return {"mac": "52:54:00:00:00:01", "bridge": "brv100" if kind == "vlan" else "br0",
            "addresses": [address] if address else [], "type": kind, "vlan_id": 100 if kind == "vlan" else None,
            "interface": "eth0" if kind == "vlan" else None, "mtu": 1400, "persistent": False}


def test_plan_nics_per_switch_backend() -> None:
    specs, vlans = plan_nics([nic("vlan")], "linux")
    assert specs == [NicSpec(mac="52:54:00:00:00:01", bridge="brv100", mtu=1400, filter_ip="10.0.0.5")]
    assert vlans == [VlanRecord(interface="eth0", vlan_id=100, bridge="brv100", mtu=1400)]
    specs, vlans = plan_nics([nic("vlan")], "ovs")
    # No nwfilter on an OVS port: ebtables/iptables never see its frames.
    assert specs == [NicSpec(mac="52:54:00:00:00:01", bridge="brv100", ovs=True, vlan_tag=100, mtu=1400)]
    assert vlans == []
    specs, _ = plan_nics([nic("bridge", address=None)], "ovs")
    assert specs[0].filter_ip is None and not specs[0].ovs  # no address: no filter; bridge networks stay Linux
    with pytest.raises(VerbError, match="switch 'vpp'"):
        plan_nics([nic()], "vpp")


def test_set_filter_ips_replaces_the_address_by_mac() -> None:
    root = parse_xml(build_domain(SPEC))  # NICs: filtered 10.0.0.5, OVS port (none), unfiltered
    set_filter_ips(root, {"52:54:00:00:00:01": "10.0.0.77", "52:54:00:00:00:03": "10.2.0.9"})
    values = [i.find("filterref/parameter").get("value") if i.find("filterref") is not None else None
              for i in root.findall("./devices/interface")]
    assert values == ["10.0.0.77", None, "10.2.0.9"]


def test_renumber_gives_a_new_instance_id_and_network_but_keeps_user_data() -> None:
    nics = [seed.SeedNic(mac="52:54:00:00:00:01", addresses=["10.0.0.5/24"], gateway="10.0.0.1", name="eth0")]
    files = seed.build_seed_files(instance_id="old-id", hostname="web1", nics=nics, ssh_keys=["ssh-ed25519 AAAA k"])
    again = seed.read_seed_bytes(seed.seed_iso_bytes(files))
    assert again == files
    moved = [seed.SeedNic(mac="52:54:00:00:00:01", addresses=["10.0.0.9/24"], gateway="10.0.0.1", name="eth0")]
    new = seed.renumber(again, "new-id", moved)
    assert yaml.safe_load(new["meta-data"]) == {"instance-id": "new-id", "local-hostname": "web1"}
    assert yaml.safe_load(new["network-config"])["ethernets"]["eth0"]["addresses"] == ["10.0.0.9/24"]
    assert new["user-data"] == files["user-data"]
