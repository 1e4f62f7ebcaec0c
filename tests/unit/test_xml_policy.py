"""SPEC §7: what a member may not put in a VM's domain XML, through the API and as a property."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from controller import xmlpolicy
from controller.core import Core
from tests.conftest import Inventory
from tests.unit.xmlhost import VNC_PASSWORD, XmlHost

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"


@pytest.fixture
def xhost(core: Core, inv: Inventory, tmp_path: Path) -> Iterator[XmlHost]:
    """A host whose agent runs on libvirt's test driver."""
    h = XmlHost(core, inv, tmp_path)
    yield h
    h.close()


@pytest.fixture
def mine(xhost: XmlHost, member: dict[str, Any]) -> dict[str, Any]:
    """The member's VM (flavor: 2 vCPUs, 1024 MiB; defined with 1 vCPU, 512 MiB)."""
    return xhost.vm("web1", member["id"])


def dev(snippet: str) -> Callable[[str], str]:
    """Add a device."""
    return lambda xml: xml.replace("</devices>", snippet + "\n  </devices>")


def top(snippet: str) -> Callable[[str], str]:
    """Add an element under <domain>."""
    return lambda xml: xml.replace("</devices>", "</devices>\n  " + snippet)


def in_os(snippet: str) -> Callable[[str], str]:
    return lambda xml: xml.replace("</os>", snippet + "\n  </os>")


def sub(old: str, new: str) -> Callable[[str], str]:
    def change(xml: str) -> str:
        assert old in xml, old
        return xml.replace(old, new, 1)
    return change


def nic(snippet: str) -> Callable[[str], str]:
    """Add something inside the VM's NIC."""
    return lambda xml: xml.replace("</interface>", snippet + "\n    </interface>", 1)


QEMU_CMDLINE = f"<qemu:commandline xmlns:qemu='{QEMU_NS}'><qemu:arg value='-no-reboot'/></qemu:commandline>"
OTHER_PREFIX = f"<q:commandline xmlns:q='{QEMU_NS}'><q:env name='X' value='1'/></q:commandline>"

# (construct of SPEC §7, change to the member's XML, the element the 422 must name)
DENIED: list[tuple[str, Callable[[str], str], str]] = [
    ("qemu namespace", top(QEMU_CMDLINE), "commandline"),
    ("qemu namespace under another prefix", top(OTHER_PREFIX), "commandline"),
    ("qemu namespace inside metadata", sub("</metadata>", f"<x:y xmlns:x='{QEMU_NS}'/></metadata>"), "metadata/y"),
    ("seclabel", top("<seclabel type='none'/>"), "seclabel"),
    ("emulator host path", dev("<emulator>/tmp/evil-qemu</emulator>"), "devices/emulator"),
    ("loader", in_os("<loader readonly='yes' type='pflash'>/tmp/OVMF.fd</loader>"), "os/loader"),
    ("nvram", in_os("<nvram>/tmp/vars.fd</nvram>"), "os/nvram"),
    ("kernel", in_os("<kernel>/boot/vmlinuz</kernel>"), "os/kernel"),
    ("initrd", in_os("<initrd>/boot/initrd.img</initrd>"), "os/initrd"),
    ("dtb", in_os("<dtb>/boot/board.dtb</dtb>"), "os/dtb"),
    ("disk source not the VM's own volume", sub("-seed.iso'", "-seed.iso.other'"), "devices/disk/source"),
    ("disk source a host file", dev("<disk type='file' device='disk'><source file='/etc/shadow'/>"
                                    "<target dev='vdc' bus='virtio'/></disk>"), "devices/disk/source"),
    ("block disk", dev("<disk type='block' device='disk'><source dev='/dev/sda'/>"
                       "<target dev='vdc' bus='virtio'/></disk>"), "devices/disk"),
    ("network disk", dev("<disk type='network' device='disk'><source protocol='nbd' name='x'>"
                         "<host name='10.0.0.1' port='10809'/></source><target dev='vdc' bus='virtio'/></disk>"),
     "devices/disk"),
    ("backingStore", sub("<target dev='vda' bus='virtio'/>", "<target dev='vda' bus='virtio'/><backingStore "
                         "type='file'><format type='qcow2'/><source file='/etc/x'/></backingStore>"),
     "devices/disk/backingStore"),
    ("filesystem", dev("<filesystem type='mount'><source dir='/'/><target dir='host'/></filesystem>"),
     "devices/filesystem"),
    ("hostdev", dev("<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='0' slot='1' "
                    "function='0'/></source></hostdev>"), "devices/hostdev"),
    ("interface hostdev", dev("<interface type='hostdev'><source><address type='pci' domain='0' bus='0' "
                              "slot='2' function='0'/></source></interface>"), "devices/interface"),
    ("interface direct", dev("<interface type='direct'><source dev='eth0' mode='bridge'/></interface>"),
     "devices/interface"),
    ("interface ethernet", dev("<interface type='ethernet'><target dev='tap9'/></interface>"),
     "devices/interface"),
    ("interface user", dev("<interface type='user'/>"), "devices/interface"),
    ("redirdev", dev("<redirdev bus='usb' type='spicevmc'/>"), "devices/redirdev"),
    ("passthrough tpm", dev("<tpm model='tpm-tis'><backend type='passthrough'/></tpm>"), "devices/tpm/backend"),
    ("rng on a host device", sub("/dev/urandom</backend>", "/dev/hwrng</backend>"), "devices/rng/backend"),
    ("rng egd backend", sub("<backend model='random'>/dev/urandom</backend>",
                            "<backend model='egd' type='tcp'><source mode='connect' host='1.2.3.4' service='7'/>"
                            "</backend>"), "devices/rng/backend"),
    ("rom file", nic("<rom file='/tmp/rom.bin'/>"), "devices/interface/rom"),
    ("chardev file", dev("<serial type='file'><target port='1'/></serial>"), "devices/serial"),
    ("chardev file with path", dev("<serial type='file'><source path='/tmp/out'/><target port='1'/></serial>"),
     "devices/serial"),
    ("chardev dev", dev("<serial type='dev'><target port='1'/></serial>"), "devices/serial"),
    ("chardev pipe", dev("<channel type='pipe'><target type='virtio' name='p'/></channel>"), "devices/channel"),
    ("chardev unix with a path", dev("<channel type='unix'><source mode='bind' path='/tmp/sock'/>"
                                     "<target type='virtio' name='s'/></channel>"), "devices/channel/source"),
    ("chardev tcp", dev("<serial type='tcp'><target port='1'/></serial>"), "devices/serial"),
    ("chardev udp", dev("<console type='udp'><target type='serial' port='1'/></console>"), "devices/console"),
    ("log file", sub("<target port='0'/>", "<log file='/tmp/serial.log'/><target port='0'/>"),
     "devices/serial/log"),
    ("NIC bridge", sub("bridge='br0'", "bridge='br1'"), "devices/interface"),
    ("NIC network", sub("<source bridge='br0'/>", "<source network='default'/>"), "devices/interface"),
    ("NIC VLAN", nic("<vlan><tag id='42'/></vlan>"), "devices/interface"),
    ("NIC MAC", lambda xml: xml.replace(xml.split("<mac address='")[1].split("'")[0], "52:54:00:de:ad:01"),
     "devices/interface"),
    ("NIC target", sub("<target dev='testnet0'/>", "<target dev='vnet9'/>"), "devices/interface"),
    ("NIC filterref", nic("<filterref filter='allow-all'/>"), "devices/interface"),
    ("graphics listening beyond loopback", lambda xml: xml.replace("127.0.0.1", "10.0.0.5"), "devices/graphics"),
    ("graphics without the password", sub(f" passwd='{VNC_PASSWORD}'", ""), "devices/graphics"),
    ("graphics with another password", sub(f"passwd='{VNC_PASSWORD}'", "passwd='mine'"), "devices/graphics"),
    ("memory beyond the flavor", sub("<memory unit='KiB'>524288</memory>", "<memory unit='GiB'>2</memory>"),
     "memory"),
    ("currentMemory beyond the flavor", sub("<currentMemory unit='KiB'>524288", "<currentMemory unit='KiB'>9999999"),
     "currentMemory"),
    ("vcpu beyond the flavor", sub(">1</vcpu>", ">4</vcpu>"), "vcpu"),
    ("memoryBacking", top("<memoryBacking><hugepages/></memoryBacking>"), "memoryBacking"),
    ("numatune", top("<numatune><memory mode='strict' nodeset='0'/></numatune>"), "numatune"),
    ("cputune", top("<cputune><shares>4096</shares></cputune>"), "cputune"),
    ("name", sub("<name>web1</name>", "<name>web9</name>"), "name"),
    ("uuid", lambda xml: xml.replace("<uuid>", "<uuid>0", 1).replace("<uuid>0", "<uuid>", 1).replace(
        xml.split("<uuid>")[1].split("</uuid>")[0], "6f1c1a52-0d9e-4b5e-9b7a-2f0e3c4d5a61"), "uuid"),
    ("unknown element (default deny)", dev("<iommu model='intel'/>"), "devices/iommu"),
    ("unknown attribute (default deny)", sub("<clock offset='utc'/>", "<clock offset='utc' sneaky='1'/>"), "clock"),
    ("labcloud's metadata", sub("<lc:created-by>labcloud</lc:created-by>", "<lc:created-by>me</lc:created-by>"),
     "metadata/instance"),
]


def history(client: FlaskClient, vm: dict[str, Any], headers: dict[str, str]) -> list[dict[str, Any]]:
    resp = client.get(f"/api/v1/vms/{vm['name']}/xml/history", headers=headers)
    assert resp.status_code == 200
    return list(resp.get_json()["history"])


@pytest.mark.parametrize(("change", "element"), [c[1:] for c in DENIED], ids=[c[0] for c in DENIED])
def test_member_put_of_a_denied_construct_is_refused(client: FlaskClient, core: Core, xhost: XmlHost,
                                                     member: dict[str, Any], mine: dict[str, Any],
                                                     change: Callable[[str], str], element: str) -> None:
    headers = member["headers"]
    original = client.get(f"/api/v1/vms/{mine['name']}/xml", headers=headers).get_json()["xml"]
    before = history(client, mine, headers)
    bad = change(original)
    assert bad != original
    resp = client.put(f"/api/v1/vms/{mine['name']}/xml", json={"xml": bad}, headers=headers)
    assert resp.status_code == 422, resp.get_data(as_text=True)
    err = resp.get_json()["error"]
    assert err["code"] == "xml_policy", err
    assert err["element"] == element, err
    assert err["line"] is None or 1 <= err["line"] <= bad.count("\n") + 1
    assert element.rsplit("/", 1)[-1] in err["message"], err["message"]
    assert xhost.libvirt_xml(mine["id"]) == original
    assert history(client, mine, headers) == before
    refused = core.db.all("SELECT * FROM events WHERE action = 'vm.xml.edit' AND result = 'refused'")
    assert refused and refused[-1]["username"] == member["username"]


def test_member_put_with_entities_is_refused_without_expanding_them(client: FlaskClient, xhost: XmlHost,
                                                                    member: dict[str, Any],
                                                                    mine: dict[str, Any]) -> None:
    original = client.get(f"/api/v1/vms/{mine['name']}/xml", headers=member["headers"]).get_json()["xml"]
    bomb = '<!DOCTYPE domain [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n' + original.replace(
        "</uuid>", "</uuid><description>&x;</description>")
    resp = client.put(f"/api/v1/vms/{mine['name']}/xml", json={"xml": bomb}, headers=member["headers"])
    assert resp.status_code == 422 and resp.get_json()["error"]["code"] == "invalid_xml"
    assert "root:" not in resp.get_data(as_text=True)
    assert xhost.libvirt_xml(mine["id"]) == original


ALLOWED_CHANGES = [
    ("unchanged", lambda xml: xml),
    ("title and description", sub("</uuid>", "</uuid>\n  <title>ci</title>\n  <description>runner</description>")),
    ("a second vCPU within the flavor", sub(">1</vcpu>", ">2</vcpu>")),
    ("memory up to the flavor", lambda xml: xml.replace(">524288</", ">1048576</")),
    ("another video model", sub("<model type='cirrus' vram='16384' heads='1' primary='yes'/>",
                                "<model type='vga' vram='16384' heads='1' primary='yes'/>")),
    ("a tablet", dev("<input type='tablet' bus='usb'/>")),
    ("clock and features", sub("<clock offset='utc'/>", "<clock offset='localtime'/>")),
    ("a disk serial", sub("<target dev='vdb' bus='virtio'/>",
                          "<target dev='vdb' bus='virtio'/>\n      <serial>seed</serial>")),
]


@pytest.mark.parametrize("change", [c[1] for c in ALLOWED_CHANGES], ids=[c[0] for c in ALLOWED_CHANGES])
def test_member_may_apply_harmless_changes(client: FlaskClient, xhost: XmlHost, member: dict[str, Any],
                                           mine: dict[str, Any], change: Callable[[str], str]) -> None:
    original = client.get(f"/api/v1/vms/{mine['name']}/xml", headers=member["headers"]).get_json()["xml"]
    resp = client.put(f"/api/v1/vms/{mine['name']}/xml", json={"xml": change(original)}, headers=member["headers"])
    assert resp.status_code == 200, resp.get_json()


def test_admin_may_apply_what_members_may_not(client: FlaskClient, auth: dict[str, str], xhost: XmlHost,
                                              mine: dict[str, Any]) -> None:
    original = client.get(f"/api/v1/vms/{mine['name']}/xml", headers=auth).get_json()["xml"]
    tuned = top("<cputune><shares>4096</shares></cputune>")(sub(">1</vcpu>", ">4</vcpu>")(original))
    resp = client.put(f"/api/v1/vms/{mine['name']}/xml", json={"xml": tuned}, headers=auth)
    assert resp.status_code == 200, resp.get_json()
    assert "<shares>4096</shares>" in xhost.libvirt_xml(mine["id"])
    assert resp.get_json()["vm"]["vcpus"] == 4


# ----------------------------------------------------------------- the property

BASE = """<domain type='qemu'>
  <name>p1</name>
  <uuid>0b8f3f8e-7c3a-4a55-8d64-3c1e7a9b2c02</uuid>
  <metadata><lc:instance xmlns:lc="urn:labcloud:domain:1"><lc:owner>alice</lc:owner></lc:instance></metadata>
  <memory unit='KiB'>524288</memory>
  <currentMemory unit='KiB'>524288</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/></features>
  <clock offset='utc'/>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/pool/p1-root.qcow2'/>
      <target dev='vda' bus='virtio'/></disk>
    <interface type='bridge'><mac address='52:54:00:11:22:33'/><source bridge='br0'/><model type='virtio'/>
    </interface>
    <serial type='pty'><target port='0'/></serial>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1' passwd='pw'>
      <listen type='address' address='127.0.0.1'/></graphics>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
</domain>
"""

# (where, snippet): "devices", "domain", "os", "disk", "nic" or "graphics"
ALLOWED_PIECES = [
    ("domain", "<title>t</title>"), ("domain", "<description>d</description>"),
    ("domain", "<on_crash>restart</on_crash>"), ("domain", "<pm><suspend-to-mem enabled='no'/></pm>"),
    ("devices", "<input type='tablet' bus='usb'/>"), ("devices", "<memballoon model='virtio'/>"),
    ("devices", "<video><model type='vga' vram='16384' heads='1'/></video>"),
    ("devices", "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"),
    ("devices", "<disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>"),
    ("devices", "<watchdog model='i6300esb' action='reset'/>"),
    ("devices", "<controller type='usb' index='0' model='qemu-xhci'/>"),
    ("devices", "<emulator>/usr/bin/qemu-system-x86_64</emulator>"),
    ("os", "<bootmenu enable='yes'/>"), ("disk", "<serial>abc</serial>"), ("nic", "<link state='up'/>"),
    ("domain", "<metadata><x:note xmlns:x='urn:example'>hello</x:note></metadata>"),
]
DENIED_PIECES = [
    ("domain", QEMU_CMDLINE), ("domain", OTHER_PREFIX), ("domain", "<seclabel type='none'/>"),
    ("domain", "<cputune><shares>2</shares></cputune>"), ("domain", "<memoryBacking><hugepages/></memoryBacking>"),
    ("domain", "<numatune><memory mode='strict' nodeset='0'/></numatune>"),
    ("domain", "<maxMemory slots='2'>9</maxMemory>"),
    ("devices", "<emulator>/tmp/qemu</emulator>"), ("os", "<kernel>/boot/vmlinuz</kernel>"),
    ("os", "<loader>/tmp/OVMF.fd</loader>"), ("disk", "<backingStore type='file'><source file='/x'/></backingStore>"),
    ("devices", "<disk type='block' device='disk'><source dev='/dev/sda'/><target dev='vdc' bus='virtio'/></disk>"),
    ("devices", "<disk type='file' device='disk'><source file='/etc/shadow'/><target dev='vdc' bus='virtio'/></disk>"),
    ("devices", "<filesystem type='mount'><source dir='/'/><target dir='h'/></filesystem>"),
    ("devices", "<hostdev mode='subsystem' type='usb'/>"), ("devices", "<redirdev bus='usb' type='spicevmc'/>"),
    ("devices", "<interface type='direct'><source dev='eth0'/></interface>"),
    ("devices", "<interface type='user'/>"), ("devices", "<serial type='tcp'><target port='1'/></serial>"),
    ("devices", "<serial type='file'><source path='/tmp/o'/><target port='1'/></serial>"),
    ("devices", "<serial type='pty'><log file='/tmp/l'/><target port='2'/></serial>"),
    ("devices", "<tpm model='tpm-tis'><backend type='passthrough'/></tpm>"),
    ("devices", "<rng model='virtio'><backend model='random'>/dev/hwrng</backend></rng>"),
    ("nic", "<rom file='/tmp/rom'/>"), ("nic", "<vlan><tag id='5'/></vlan>"), ("nic", "<filterref filter='x'/>"),
    ("graphics", "<listen type='address' address='10.1.2.3'/>"), ("devices", "<shmem name='s'/>"),
]


def build(pieces: list[tuple[str, str]]) -> etree._Element:
    """Insert pieces into BASE at their places."""
    root = xmlpolicy.parse(BASE)
    anchors = {"domain": root, "devices": root.find("devices"), "os": root.find("os"),
               "disk": root.find("devices/disk"), "nic": root.find("devices/interface"),
               "graphics": root.find("devices/graphics")}
    for where, snippet in pieces:
        anchor = anchors[where]
        assert anchor is not None
        anchor.append(etree.fromstring(snippet))
    return root


def holds_denied(root: etree._Element) -> list[str]:
    """Find SPEC §7 constructs by their own description, independently of the policy's code."""
    found = []
    for el in root.iter(etree.Element):
        q = etree.QName(el)
        path = xmlpolicy.path_of(el)
        if q.namespace == QEMU_NS:
            found.append("qemu namespace")
        if q.localname in ("seclabel", "cputune", "memoryBacking", "numatune", "maxMemory", "backingStore",
                           "filesystem", "hostdev", "redirdev", "kernel", "loader", "log", "vlan", "filterref",
                           "shmem"):
            found.append(q.localname)
        if q.localname == "emulator" and el.text != "/usr/bin/qemu-system-x86_64":
            found.append("emulator path")
        if q.localname == "disk" and el.get("type") != "file":
            found.append("disk type")
        if q.localname == "source" and el.get("file") not in (None, "/pool/p1-root.qcow2"):
            found.append("foreign disk")
        if q.localname == "interface" and el.get("type") not in ("bridge", "network"):
            found.append("interface type")
        if path == f"devices/{q.localname}" and q.localname in ("serial", "channel", "console") \
                and el.get("type") not in ("pty", "unix"):
            found.append("chardev type")
        if q.localname == "source" and el.get("path"):
            found.append("chardev path")
        if q.localname == "tpm" and el.find("backend[@type='passthrough']") is not None:
            found.append("tpm passthrough")
        if q.localname == "backend" and (el.text or "").strip() not in ("", "/dev/urandom", "/dev/random"):
            found.append("rng host device")
        if q.localname == "rom" and el.get("file"):
            found.append("rom file")
        if q.localname == "listen" and el.get("address") not in (None, "127.0.0.1"):
            found.append("graphics listen")
    return found


PIECES = [(p, False) for p in ALLOWED_PIECES] + [(p, True) for p in DENIED_PIECES]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES), max_size=6))
def test_anything_the_policy_accepts_for_a_member_holds_nothing_denied(
        chosen: list[tuple[tuple[str, str], bool]]) -> None:
    current = xmlpolicy.parse(BASE)
    doc = build([piece for piece, _denied in chosen])
    try:
        xmlpolicy.check_member(doc, current, xmlpolicy.Limits(vcpus=2, memory_mib=1024))
    except xmlpolicy.PolicyError as exc:
        assert exc.element, exc.message
        assert any(denied for _piece, denied in chosen) or exc.element, exc.message
        return
    assert holds_denied(doc) == [], etree.tostring(doc)
    assert not any(denied for _piece, denied in chosen)
