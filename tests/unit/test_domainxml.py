"""Golden-file tests of hostagent.domainxml, each result also defined in libvirt's test driver.

Regenerate the golden files after an intended change with
``REGEN_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_domainxml.py`` and review the diff.

What libvirt's ``test:///default`` driver (libvirt 9.0) does with our XML, found by
probing it: it accepts ``<domain type='kvm'>`` and ``type='qemu'`` (any type in the
RNG schema; only unknown types fail the schema), does not check the type or the
x86_64 arch against its own capabilities (which list only i686/``test``), and keeps
the type as given, so no substitution is needed. ``VIR_DOMAIN_DEFINE_VALIDATE``
validates against ``domain.rng``, so schema mistakes (a misplaced element, an
unknown device) are caught here. Missing bridges and disk files do not matter at
define time. It adds what QEMU would add later (a virtio-serial controller,
a video device, ``<target dev='testnetN'/>`` on NICs) and keeps ``<metadata>``
elements in foreign namespaces with their prefix.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import libvirt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from hostagent.domainxml import (
    LABCLOUD_NS,
    DomainSpec,
    NicSpec,
    build_domain,
    disk_paths,
    interface_macs,
    parse_xml,
    read_metadata,
    safe_parser,
)

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("REGEN_GOLDEN") == "1"

SPECS: dict[str, DomainSpec] = {
    "kvm-one-nic": DomainSpec(
        uuid="6f1c1a52-0d9e-4b5e-9b7a-2f0e3c4d5a61",
        name="web1",
        vcpus=2,
        memory_mib=2048,
        root_disk="/var/lib/libvirt/images/web1-root.qcow2",
        seed_disk="/var/lib/libvirt/images/web1-seed.iso",
        nics=[NicSpec(mac="52:54:00:12:34:56", bridge="br0")],
        virt_type="kvm",
        vm_id="vm-0001",
        owner="alice",
    ),
    "qemu-two-nics-vnc": DomainSpec(
        uuid="0b8f3f8e-7c3a-4a55-8d64-3c1e7a9b2c02",
        name="db2",
        vcpus=1,
        memory_mib=512,
        root_disk="/var/lib/libvirt/images/db2-root.qcow2",
        seed_disk="/var/lib/libvirt/images/db2-seed.iso",
        nics=[
            NicSpec(mac="52:54:00:AB:CD:01", bridge="br0"),
            NicSpec(mac="52:54:00:ab:cd:02", bridge="br-vlan100"),
        ],
        virt_type="qemu",
        vm_id="vm-0002",
        owner="bob",
        vnc_password="Xy7#pq2!",
    ),
    "kvm-no-seed": DomainSpec(
        uuid="9d5e0c4a-1f2b-4c3d-8e7f-a0b1c2d3e403",
        name="adopted3",
        vcpus=4,
        memory_mib=4096,
        root_disk="/srv/nfs/pool/adopted3.qcow2",
        seed_disk=None,
        nics=[NicSpec(mac="52:54:00:00:00:03", bridge="br0")],
        vm_id="vm-0003",
        owner="carol",
    ),
}


def assert_golden(name: str, text: str) -> None:
    """Compare ``text`` with ``golden/<name>``, or rewrite the file when REGEN_GOLDEN=1."""
    path = GOLDEN / name
    if REGEN:
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run with REGEN_GOLDEN=1 to create it"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs; REGEN_GOLDEN=1 if intended"


@pytest.fixture
def conn() -> Iterator[libvirt.virConnect]:
    """A test-driver connection; domains defined through it are undefined afterwards.

    ``test:///default`` is one shared in-process state, so cleaning up matters.
    """
    connection = libvirt.open("test:///default")
    before = set(connection.listDefinedDomains())
    try:
        yield connection
    finally:
        for name in set(connection.listDefinedDomains()) - before:
            connection.lookupByName(name).undefine()
        connection.close()


def _define(conn: libvirt.virConnect, xml: str) -> libvirt.virDomain:
    return conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)


@pytest.mark.parametrize("case", sorted(SPECS))
def test_build_domain_matches_golden(case: str) -> None:
    assert_golden(f"{case}-out.xml", build_domain(SPECS[case]))


@pytest.mark.parametrize("case", sorted(SPECS))
def test_golden_defines_in_libvirt_test_driver(conn: libvirt.virConnect, case: str) -> None:
    spec = SPECS[case]
    domain = _define(conn, build_domain(spec))
    described = domain.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)
    root = parse_xml(described)
    assert root.get("type") == spec.virt_type  # the driver keeps kvm/qemu as given
    assert domain.UUIDString() == spec.uuid
    assert domain.maxMemory() == spec.memory_mib * 1024
    assert read_metadata(described) == {"vm_id": spec.vm_id, "owner": spec.owner, "created_by": "labcloud"}
    assert disk_paths(described) == [p for p in (spec.root_disk, spec.seed_disk) if p]
    assert interface_macs(described) == [nic.mac.lower() for nic in spec.nics]
    graphics = root.find("./devices/graphics")
    assert graphics is not None and graphics.get("passwd") == spec.vnc_password


def test_libvirt_metadata_api_sees_our_namespace(conn: libvirt.virConnect) -> None:
    domain = _define(conn, build_domain(SPECS["kvm-one-nic"]))
    element = parse_xml(domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, LABCLOUD_NS))
    assert element.findtext("vm-id") == "vm-0001"  # libvirt returns it without namespace


def test_schema_validation_is_really_on(conn: libvirt.virConnect) -> None:
    # Guards the golden tests above: if VALIDATE silently did nothing they would prove nothing.
    root = parse_xml(build_domain(SPECS["kvm-no-seed"]))
    devices = root.find("devices")
    assert devices is not None
    etree.SubElement(devices, "no-such-device")
    with pytest.raises(libvirt.libvirtError, match="schema"):
        _define(conn, etree.tostring(root, encoding="unicode"))


def test_seed_is_a_readonly_virtio_disk_not_sata() -> None:
    root = parse_xml(build_domain(SPECS["kvm-one-nic"]))
    seeds = root.xpath("./devices/disk[target/@dev='vdb']")
    assert isinstance(seeds, list) and len(seeds) == 1
    seed = seeds[0]
    assert isinstance(seed, etree._Element)
    assert seed.get("device") == "disk"
    assert seed.find("target").get("bus") == "virtio"  # type: ignore[union-attr]
    assert seed.find("readonly") is not None
    assert seed.find("driver").get("type") == "raw"  # type: ignore[union-attr]


def test_cpu_mode_depends_on_virt_type() -> None:
    kvm = parse_xml(build_domain(SPECS["kvm-one-nic"]))
    qemu = parse_xml(build_domain(SPECS["qemu-two-nics-vnc"]))
    assert kvm.find("cpu").get("mode") == "host-model"  # type: ignore[union-attr]
    assert qemu.find("cpu") is None  # TCG: QEMU's default model, never host-passthrough


def test_no_emulator_and_vnc_only_on_loopback() -> None:
    root = parse_xml(build_domain(SPECS["qemu-two-nics-vnc"]))
    assert root.find(".//emulator") is None
    assert root.xpath("./devices/graphics/@listen") == ["127.0.0.1"]
    assert root.xpath("./devices/graphics/listen/@address") == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"uuid": "not-a-uuid"}, "UUID"),
        ({"name": "bad name"}, "domain name"),
        ({"virt_type": "xen"}, "virt_type"),
        ({"vcpus": 0}, "vcpus"),
        ({"memory_mib": 0}, "memory_mib"),
        ({"root_disk": "relative.qcow2"}, "absolute"),
        ({"nics": [NicSpec("52:54:00:00:00", "br0")]}, "MAC"),
        ({"nics": [NicSpec("01:54:00:00:00:01", "br0")]}, "multicast"),
        ({"nics": [NicSpec("52:54:00:00:00:01", "br0")] * 2}, "two NICs"),
        ({"nics": [NicSpec("52:54:00:00:00:01", "br0; rm -rf /")]}, "bridge"),
        ({"vnc_password": "longer-than-eight"}, "8 characters"),
    ],
)
def test_build_domain_rejects_bad_specs(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_domain(replace(SPECS["kvm-one-nic"], **change))


_xml_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)


@settings(max_examples=60, deadline=None)
@given(vm_id=_xml_text, owner=_xml_text)
def test_metadata_round_trips_any_text(vm_id: str, owner: str) -> None:
    spec = replace(SPECS["kvm-one-nic"], vm_id=vm_id, owner=owner)
    assert read_metadata(build_domain(spec)) == {"vm_id": vm_id, "owner": owner, "created_by": "labcloud"}


def test_read_metadata_matches_namespace_not_prefix() -> None:
    xml = (
        "<domain type='kvm'><name>x</name><metadata>"
        f"<other:instance xmlns:other='{LABCLOUD_NS}'><other:vm-id>v9</other:vm-id></other:instance>"
        "<lc:instance xmlns:lc='urn:someone-else'><lc:vm-id>wrong</lc:vm-id></lc:instance>"
        "</metadata></domain>"
    )
    assert read_metadata(xml) == {"vm_id": "v9"}


def test_read_metadata_none_for_unmanaged_domains() -> None:
    assert read_metadata("<domain type='kvm'><name>handmade</name></domain>") is None
    assert read_metadata("<domain type='kvm'><metadata/></domain>") is None
    assert read_metadata(f"<network><metadata><i xmlns='{LABCLOUD_NS}'/></metadata></network>") is None


def test_disk_paths_and_macs_of_handwritten_xml() -> None:
    xml = """<?xml version='1.0' encoding='UTF-8'?>
    <domain type='kvm'><devices>
      <disk type='file' device='disk'><source file='/a.qcow2'/></disk>
      <disk type='block' device='disk'><source dev='/dev/sdb'/></disk>
      <disk type='file' device='cdrom'><source file='/b.iso'/></disk>
      <disk type='file' device='cdrom'/>
      <interface type='network'><mac address='52:54:00:AA:BB:CC'/></interface>
      <interface type='user'/>
    </devices></domain>"""
    assert disk_paths(xml) == ["/a.qcow2", "/b.iso"]
    assert interface_macs(xml.encode()) == ["52:54:00:aa:bb:cc"]


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<domain type="kvm"><name>&lol9;</name></domain>"""

EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE domain [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<domain type="kvm"><name>&xxe;</name></domain>"""


@pytest.mark.parametrize("document", [BILLION_LAUGHS, EXTERNAL_ENTITY], ids=["billion-laughs", "xxe"])
def test_parse_xml_refuses_entities(document: str) -> None:
    # libxml2 itself already stops the billion laughs ("entity amplification factor
    # exceeded") before our DOCTYPE refusal sees it; both surface as ValueError.
    with pytest.raises(ValueError, match=r"DOCTYPE|amplification"):
        parse_xml(document)
    with pytest.raises(ValueError):
        read_metadata(document.encode())


def test_parser_itself_never_expands_entities() -> None:
    # Even below the DOCTYPE refusal the parser must not expand: check the options directly.
    parser = safe_parser()
    root = etree.fromstring(EXTERNAL_ENTITY.encode(), parser)
    assert "root:" not in etree.tostring(root, encoding="unicode")
    try:
        root = etree.fromstring(BILLION_LAUGHS.encode(), parser)
    except etree.XMLSyntaxError:
        return  # libxml2's own amplification guard refused it: also fine
    assert len(etree.tostring(root)) < 1000


@pytest.mark.parametrize("document", ["", "   ", "<domain>", "<domain></dom>", "not xml", b"\xff\xfe<a"])
def test_parse_xml_malformed_raises_value_error(document: str | bytes) -> None:
    with pytest.raises(ValueError, match="XML"):
        parse_xml(document)


def test_parse_xml_accepts_str_with_encoding_declaration() -> None:
    root = parse_xml("<?xml version='1.0' encoding='UTF-8'?>\n<domain><name>é</name></domain>")
    assert root.findtext("name") == "é"
