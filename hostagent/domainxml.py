"""Libvirt domain XML for labcloud VMs: built and read with lxml, never with string formatting.

``build_domain`` turns a :class:`DomainSpec` into the XML the agent defines. The
readers (``read_metadata``, ``disk_paths``, ``interface_macs``) accept any domain
XML, including what ``virDomainGetXMLDesc`` returns after libvirt normalised it,
and all of them go through :func:`parse_xml`, which never expands entities.
"""

from __future__ import annotations

import ipaddress
import re
import uuid as uuidlib
from dataclasses import dataclass, field

from lxml import etree

LABCLOUD_NS = "urn:labcloud:domain:1"
# libvirt's memory units (lower-cased), in bytes per unit
MEMORY_UNITS = {"b": 1, "bytes": 1, "kb": 1000, "k": 1024, "kib": 1024, "mb": 1000**2, "m": 1024**2,
                "mib": 1024**2, "gb": 1000**3, "g": 1024**3, "gib": 1024**3, "tb": 1000**4, "t": 1024**4,
                "tib": 1024**4}
LABCLOUD_PREFIX = "lc"
CREATED_BY = "labcloud"
VIRT_TYPES = ("kvm", "qemu")

# QEMU's VNC authentication only uses the first 8 bytes of the password; a longer
# one would silently be weaker than the caller believes.
VNC_PASSWORD_MAX = 8

_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_BRIDGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$")  # Linux IFNAMSIZ - 1


@dataclass(frozen=True)
class NicSpec:
    """One virtio NIC on a host bridge: a Linux bridge, or an Open vSwitch bridge with a VLAN tag.

    ``filter_ip`` turns on libvirt's ``clean-traffic`` nwfilter with that address, so
    the guest cannot send from another IP or MAC (anti-spoofing).
    """

    mac: str
    bridge: str
    ovs: bool = False
    vlan_tag: int | None = None
    mtu: int | None = None
    filter_ip: str | None = None


@dataclass(frozen=True)
class VlanRecord:
    """A VLAN device the agent made on this host for the domain, kept in labcloud's metadata."""

    interface: str
    vlan_id: int
    bridge: str
    mtu: int | None = None
    persistent: bool = False


@dataclass(frozen=True)
class DomainSpec:
    """Everything labcloud decides about a new domain; the rest is libvirt's default."""

    uuid: str
    name: str
    vcpus: int
    memory_mib: int
    root_disk: str
    seed_disk: str | None
    nics: list[NicSpec] = field(default_factory=list)
    virt_type: str = "kvm"
    vm_id: str = ""
    owner: str = ""
    vnc_password: str | None = None
    vlans: list[VlanRecord] = field(default_factory=list)


# --------------------------------------------------------------------------- parsing


def safe_parser(encoding: str | None = None) -> etree.XMLParser:
    """Return an lxml parser that never resolves entities, loads DTDs or touches the network."""
    return etree.XMLParser(
        encoding=encoding,
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
        load_dtd=False,
        dtd_validation=False,
    )


def parse_xml(text: str | bytes) -> etree._Element:
    """Parse untrusted XML safely and return its root element.

    Entities are never expanded and nothing is fetched from the network. A document
    carrying a DOCTYPE is refused outright: libvirt never produces one, and an
    internal subset is exactly where entity bombs and external entities live.
    Raises ValueError with the parser's reason when the input is not well formed.
    """
    if isinstance(text, str):
        # lxml refuses str input that carries an encoding declaration; encoding it
        # ourselves and forcing UTF-8 accepts what ``virsh dumpxml`` prints.
        data = text.encode("utf-8")
        parser = safe_parser("utf-8")
    else:
        data = text
        parser = safe_parser()
    if not data.strip():
        raise ValueError("XML document is empty")
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise ValueError(f"malformed XML: {exc}") from exc
    if root is None:  # lxml returns None for some recover-mode inputs; be explicit
        raise ValueError("malformed XML: no root element")
    docinfo = root.getroottree().docinfo
    if getattr(docinfo, "doctype", "") or docinfo.internalDTD is not None:
        raise ValueError("XML with a DOCTYPE is not accepted (entities are not allowed in domain XML)")
    return root


# --------------------------------------------------------------------------- building


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    """Append a child element with attributes (in the given order) and optional text."""
    child = etree.SubElement(parent, tag)
    for key, value in attrs.items():
        child.set(key, value)
    if text is not None:
        child.text = text
    return child


def _check_spec(spec: DomainSpec) -> None:
    """Refuse a spec libvirt would reject late or, worse, accept with a surprise."""
    try:
        uuidlib.UUID(spec.uuid)
    except ValueError:
        raise ValueError(f"uuid {spec.uuid!r} is not a UUID") from None
    if not _NAME_RE.match(spec.name):
        raise ValueError(f"domain name {spec.name!r} must be 1-63 characters of letters, digits, '.', '_' or '-'")
    if spec.virt_type not in VIRT_TYPES:
        raise ValueError(f"virt_type {spec.virt_type!r} must be one of {', '.join(VIRT_TYPES)}")
    if spec.vcpus < 1:
        raise ValueError(f"vcpus must be at least 1, got {spec.vcpus}")
    if spec.memory_mib < 1:
        raise ValueError(f"memory_mib must be at least 1, got {spec.memory_mib}")
    for label, path in (("root_disk", spec.root_disk), ("seed_disk", spec.seed_disk)):
        if path is not None and not path.startswith("/"):
            raise ValueError(f"{label} must be an absolute path, got {path!r}")
    seen: set[str] = set()
    for nic in spec.nics:
        mac = nic.mac.lower()
        if not _MAC_RE.match(mac):
            raise ValueError(f"MAC address {nic.mac!r} is not of the form 52:54:00:xx:xx:xx")
        if int(mac[:2], 16) & 1:
            raise ValueError(f"MAC address {nic.mac!r} is a multicast address")
        if mac in seen:
            raise ValueError(f"MAC address {nic.mac!r} is used by two NICs")
        seen.add(mac)
        if not _BRIDGE_RE.match(nic.bridge):
            raise ValueError(f"bridge name {nic.bridge!r} is not a valid Linux interface name")
        if nic.vlan_tag is not None and not (nic.ovs and 1 <= nic.vlan_tag <= 4094):
            raise ValueError(f"VLAN tag {nic.vlan_tag!r} needs an Open vSwitch port and must be 1-4094")
        if nic.filter_ip is not None:
            ipaddress.ip_address(nic.filter_ip)  # ValueError names the bad address
    if spec.vnc_password is not None and not 0 < len(spec.vnc_password) <= VNC_PASSWORD_MAX:
        raise ValueError(f"vnc_password must be 1 to {VNC_PASSWORD_MAX} characters (a VNC protocol limit)")


def _metadata(root: etree._Element, spec: DomainSpec) -> None:
    metadata = _sub(root, "metadata")
    instance = etree.SubElement(metadata, f"{{{LABCLOUD_NS}}}instance", nsmap={LABCLOUD_PREFIX: LABCLOUD_NS})
    for key, value in (("vm-id", spec.vm_id), ("owner", spec.owner), ("created-by", CREATED_BY)):
        _sub(instance, f"{{{LABCLOUD_NS}}}{key}", value)
    if spec.vlans:
        vlans = _sub(instance, f"{{{LABCLOUD_NS}}}vlans")
        for vlan in spec.vlans:
            record = _sub(vlans, f"{{{LABCLOUD_NS}}}vlan", interface=vlan.interface, id=str(vlan.vlan_id),
                          bridge=vlan.bridge, persistent="yes" if vlan.persistent else "no")
            if vlan.mtu:
                record.set("mtu", str(vlan.mtu))


def _cpu(root: etree._Element, virt_type: str) -> None:
    # kvm: host-model gives guests the host's features while libvirt still checks a
    # migration destination can provide them; host-passthrough would tie a guest to
    # identical CPUs, and our hosts are uneven. qemu (TCG) emulates the CPU, so
    # "host" models are meaningless there: leave QEMU's default model (qemu64).
    if virt_type == "kvm":
        _sub(root, "cpu", mode="host-model")


def _file_disk(devices: etree._Element, path: str, target: str, fmt: str, *, readonly: bool) -> None:
    disk = _sub(devices, "disk", type="file", device="disk")
    if readonly:
        _sub(disk, "driver", name="qemu", type=fmt)
    else:
        # cache=none (O_DIRECT) is what libvirt considers safe for live migration on
        # shared storage; discard=unmap lets the qcow2 overlay shrink when the guest trims.
        _sub(disk, "driver", name="qemu", type=fmt, cache="none", discard="unmap")
    _sub(disk, "source", file=path)
    # virtio, never SATA: Debian's cloud kernel has no AHCI driver (SPEC §6).
    _sub(disk, "target", dev=target, bus="virtio")
    if readonly:
        _sub(disk, "readonly")


def _interface(devices: etree._Element, nic: NicSpec) -> None:
    interface = _sub(devices, "interface", type="bridge")
    _sub(interface, "mac", address=nic.mac.lower())
    _sub(interface, "source", bridge=nic.bridge)
    if nic.ovs:
        _sub(interface, "virtualport", type="openvswitch")
    if nic.vlan_tag is not None:
        _sub(_sub(interface, "vlan"), "tag", id=str(nic.vlan_tag))
    _sub(interface, "model", type="virtio")
    if nic.mtu:
        _sub(interface, "mtu", size=str(nic.mtu))
    if nic.filter_ip is not None:
        # clean-traffic: no other source MAC or IP, no ARP/RARP spoofing, no other L3 protocol.
        filterref = _sub(interface, "filterref", filter="clean-traffic")
        _sub(filterref, "parameter", name="IP", value=nic.filter_ip)


def _devices(root: etree._Element, spec: DomainSpec) -> None:
    devices = _sub(root, "devices")
    _file_disk(devices, spec.root_disk, "vda", "qcow2", readonly=False)
    if spec.seed_disk is not None:
        # The NoCloud ISO is attached as a read-only virtio *disk*: virtio has no
        # cdrom device type, and cloud-init finds it by its "cidata" label anyway.
        _file_disk(devices, spec.seed_disk, "vdb", "raw", readonly=True)
    for nic in spec.nics:
        _interface(devices, nic)
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    # No <source path>: libvirt picks the socket path, and the XML policy (SPEC §7)
    # refuses unix character devices that name one.
    channel = _sub(devices, "channel", type="unix")
    _sub(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
    graphics = _sub(devices, "graphics", type="vnc", autoport="yes", listen="127.0.0.1")
    if spec.vnc_password is not None:
        graphics.set("passwd", spec.vnc_password)
    _sub(graphics, "listen", type="address", address="127.0.0.1")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    _sub(devices, "memballoon", model="virtio")


def build_domain(spec: DomainSpec) -> str:
    """Return the domain XML for ``spec``; raises ValueError on an invalid spec."""
    _check_spec(spec)
    root = etree.Element("domain", type=spec.virt_type)
    _sub(root, "name", spec.name)
    _sub(root, "uuid", str(uuidlib.UUID(spec.uuid)))
    _metadata(root, spec)
    _sub(root, "memory", str(spec.memory_mib), unit="MiB")
    _sub(root, "currentMemory", str(spec.memory_mib), unit="MiB")
    _sub(root, "vcpu", str(spec.vcpus))
    os_el = _sub(root, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    _sub(os_el, "boot", dev="hd")
    features = _sub(root, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    _cpu(root, spec.virt_type)
    _sub(root, "clock", offset="utc")
    _sub(root, "on_poweroff", "destroy")
    _sub(root, "on_reboot", "restart")
    _sub(root, "on_crash", "destroy")
    _devices(root, spec)
    etree.indent(root, space="  ")
    return etree.tostring(root, encoding="unicode") + "\n"


# --------------------------------------------------------------------------- reading

_NS = {"lc": LABCLOUD_NS}


def read_metadata(xml: str | bytes) -> dict[str, str] | None:
    """Return labcloud's metadata of a domain (``vm_id``, ``owner``, ``created_by``…).

    Returns None when the domain carries no labcloud metadata, i.e. it was not
    created by labcloud (an *unmanaged* domain). Matching is by namespace URI, so
    a different prefix chosen by whoever edited the XML does not matter.
    """
    root = parse_xml(xml)
    if root.tag != "domain":
        return None
    found = root.xpath("./metadata/lc:instance", namespaces=_NS)
    if not isinstance(found, list) or not found:
        return None
    instance = found[0]
    assert isinstance(instance, etree._Element)
    result: dict[str, str] = {}
    for child in instance:
        if not isinstance(child.tag, str) or len(child):  # comments, processing instructions, lists
            continue
        qname = etree.QName(child)
        if qname.namespace == LABCLOUD_NS:
            result[qname.localname.replace("-", "_")] = child.text or ""
    return result


def _strings(root: etree._Element, path: str) -> list[str]:
    found = root.xpath(path)
    return [str(value) for value in found] if isinstance(found, list) else []


def disk_paths(xml: str | bytes) -> list[str]:
    """Return the source files of all file-backed disks (disks and cdroms), in order."""
    return _strings(parse_xml(xml), "./devices/disk[@type='file']/source/@file")


def interface_macs(xml: str | bytes) -> list[str]:
    """Return the MAC addresses of all interfaces, lower-cased, in order."""
    return [mac.lower() for mac in _strings(parse_xml(xml), "./devices/interface/mac/@address")]


def vlan_records(xml: str | bytes) -> list[VlanRecord]:
    """Return the VLAN devices labcloud made on the host for this domain (from its metadata)."""
    root = parse_xml(xml)
    found = root.xpath("./metadata/lc:instance/lc:vlans/lc:vlan", namespaces=_NS)
    out = []
    for el in found if isinstance(found, list) else []:
        assert isinstance(el, etree._Element)
        mtu = el.get("mtu")
        out.append(VlanRecord(interface=el.get("interface", ""), vlan_id=int(el.get("id", "0")),
                              bridge=el.get("bridge", ""), mtu=int(mtu) if mtu else None,
                              persistent=el.get("persistent") == "yes"))
    return out


def interface_bridges(xml: str | bytes) -> list[str]:
    """Return the source bridges of all bridge interfaces, in order."""
    return _strings(parse_xml(xml), "./devices/interface[@type='bridge']/source/@bridge")


LOOPBACK_LISTENS = ("127.0.0.1", "::1", "localhost")


def vnc_port(xml: str | bytes) -> int | None:
    """Return the loopback TCP port of a running domain's VNC display, or None when it has none there."""
    for graphics in parse_xml(xml).iterfind("./devices/graphics[@type='vnc']"):
        port = int(graphics.get("port") or -1)
        listens = {graphics.get("listen")} | {e.get("address") for e in graphics.iterfind("listen[@address]")}
        if port > 0 and listens - {None} <= set(LOOPBACK_LISTENS):
            return port
    return None
