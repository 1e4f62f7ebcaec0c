"""The domain-XML policy (SPEC §7): what a member may put in a VM's libvirt XML.

Default deny: an element or attribute this module does not know is refused. Paths to
host files (emulator, loader, disks…) are only accepted unchanged from the VM's current
definition, which is how a member keeps what labcloud and libvirt wrote while being
unable to point the VM at anything else on the host. Every refusal names the element
(a path like ``devices/disk/source``), the attribute when there is one, and the line.
Name and UUID checks (``check_identity``) hold for everyone, admins included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from hostagent.domainxml import LABCLOUD_NS, MEMORY_UNITS, safe_parser

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
RNG_HOST_SOURCES = {"/dev/urandom", "/dev/random"}

ADDRESS_ATTRS = {"type", "domain", "bus", "slot", "function", "multifunction", "controller", "target", "unit",
                 "port", "reg", "cssid", "ssid", "devno", "iobase", "irq"}

# Element path (local names from <domain>) -> the attributes a member may use on it.
# A path ending in "*" allows any descendant (free-form content: titles, descriptions,
# foreign-namespace metadata). "address", "alias" and "boot" are allowed under every device.
ALLOWED: dict[str, set[str]] = {
    "": {"type"},
    "name": set(), "uuid": set(), "title": set(), "description": set(), "genid": set(),
    "metadata": set(), "metadata/*": set(),
    "memory": {"unit"}, "currentMemory": {"unit"}, "vcpu": {"placement", "current"},
    "os": set(), "os/type": {"arch", "machine"}, "os/boot": {"dev"}, "os/bootmenu": {"enable", "timeout"},
    "os/smbios": {"mode"}, "os/cmdline": set(), "os/bios": {"useserial", "rebootTimeout"},
    "sysinfo": {"type"}, "sysinfo/*": {"name"},
    "features": set(), "features/acpi": set(), "features/apic": {"eoi"}, "features/pae": set(),
    "features/hap": {"state"}, "features/vmport": {"state"}, "features/pmu": {"state"},
    "features/smm": {"state"}, "features/pvspinlock": {"state"},
    "cpu": {"mode", "match", "check", "migratable"}, "cpu/model": {"fallback", "vendor_id"},
    "cpu/vendor": set(), "cpu/topology": {"sockets", "dies", "clusters", "cores", "threads"},
    "cpu/feature": {"policy", "name"},
    "clock": {"offset", "adjustment", "basis", "timezone"},
    "clock/timer": {"name", "present", "tickpolicy", "track", "frequency", "mode"},
    "on_poweroff": set(), "on_reboot": set(), "on_crash": set(),
    "pm": set(), "pm/suspend-to-mem": {"enabled"}, "pm/suspend-to-disk": {"enabled"},
    "devices": set(),
    "devices/disk": {"type", "device", "snapshot"},
    "devices/disk/driver": {"name", "type", "cache", "discard", "io", "detect_zeroes", "error_policy",
                            "rerror_policy", "copy_on_read"},
    "devices/disk/source": {"file"}, "devices/disk/target": {"dev", "bus", "removable", "tray"},
    "devices/disk/readonly": set(), "devices/disk/shareable": set(), "devices/disk/serial": set(),
    "devices/controller": {"type", "index", "model", "ports", "vectors"},
    "devices/controller/model": {"name"},
    "devices/controller/target": {"chassisNr", "chassis", "port", "busNr", "index", "hotplug"},
    "devices/controller/driver": {"queues"},
    "devices/interface": {"type"}, "devices/interface/mac": {"address"},
    "devices/interface/source": {"bridge", "network"}, "devices/interface/model": {"type"},
    "devices/interface/target": {"dev"}, "devices/interface/link": {"state"},
    "devices/interface/driver": {"name", "queues"}, "devices/interface/rom": {"bar", "enabled"},
    "devices/interface/filterref": {"filter"}, "devices/interface/filterref/parameter": {"name", "value"},
    "devices/interface/vlan": {"trunk"}, "devices/interface/vlan/tag": {"id", "nativeMode"},
    "devices/input": {"type", "bus"},
    "devices/graphics": {"type", "port", "autoport", "listen", "passwd", "keymap", "sharePolicy", "websocket"},
    "devices/graphics/listen": {"type", "address"},
    "devices/video": set(), "devices/video/model": {"type", "vram", "heads", "primary", "ram", "vgamem", "vram64"},
    "devices/video/model/acceleration": {"accel3d", "accel2d"},
    "devices/audio": {"id", "type"}, "devices/sound": {"model"}, "devices/sound/codec": {"type"},
    "devices/serial": {"type"}, "devices/console": {"type"}, "devices/channel": {"type"},
    "devices/serial/target": {"type", "port"}, "devices/serial/target/model": {"name"},
    "devices/console/target": {"type", "port"}, "devices/channel/target": {"type", "name", "state"},
    "devices/serial/source": {"mode"}, "devices/console/source": {"mode"}, "devices/channel/source": {"mode"},
    "devices/memballoon": {"model", "autodeflate", "freePageReporting"}, "devices/memballoon/stats": {"period"},
    "devices/rng": {"model"}, "devices/rng/backend": {"model"}, "devices/rng/rate": {"period", "bytes"},
    "devices/tpm": {"model"}, "devices/tpm/backend": {"type", "version"},
    "devices/watchdog": {"model", "action"}, "devices/panic": {"model"},
}
DEVICE_CHILDREN = {"address": ADDRESS_ATTRS, "alias": {"name"}, "boot": {"order"}}

# Allowed only exactly as in the current definition (host paths, security labels, cgroups).
UNCHANGED_ONLY = {"devices/emulator", "os/loader", "os/nvram", "os/kernel", "os/initrd", "os/dtb",
                  "seclabel", "seclabel/*", "resource", "resource/*"}

# Refused with a reason of their own rather than "not allowed".
REASONS = {
    "seclabel": "security labels are set by the host", "memoryBacking": "memory backing is a host resource",
    "numatune": "NUMA tuning is a host resource", "cputune": "CPU tuning is a host resource",
    "blkiotune": "I/O tuning is a host resource", "memtune": "memory tuning is a host resource",
    "maxMemory": "memory hotplug goes beyond the flavor", "vcpus": "vCPU hotplug goes beyond the flavor",
    "iothreads": "I/O threads are a host resource", "cpu/numa": "guest NUMA is a host resource",
    "devices/hostdev": "host devices cannot be passed through", "devices/redirdev": "USB redirection reaches the host",
    "devices/filesystem": "host directories cannot be shared", "devices/disk/backingStore":
    "backing stores are labcloud's", "devices/smartcard": "smartcards reach the host",
    "devices/shmem": "shared memory reaches the host", "devices/vsock": "vsock reaches the host",
    "devices/serial/log": "character device logs write host files",
    "devices/console/log": "character device logs write host files",
    "devices/channel/log": "character device logs write host files",
}
CHARDEV_TYPES = {"pty", "unix", "spicevmc", "null", "vc"}
DISK_TYPES = {"file"}
INTERFACE_TYPES = {"bridge", "network"}


@dataclass
class Limits:
    """What the VM's flavor (or quota) allows."""

    vcpus: int
    memory_mib: int


class PolicyError(Exception):
    """The XML breaks the policy (or is not XML); says where."""

    def __init__(self, message: str, element: str | None = None, line: int | None = None,
                 attribute: str | None = None, code: str = "xml_policy") -> None:
        super().__init__(message)
        self.message, self.element, self.line, self.attribute, self.code = message, element, line, attribute, code


def parse(text: str) -> etree._Element:
    """Parse untrusted domain XML without entities, DTDs or network; PolicyError(invalid_xml) if malformed."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    if not data.strip():
        raise PolicyError("the XML document is empty", code="invalid_xml")
    try:
        root = etree.fromstring(data, safe_parser("utf-8"))
    except etree.XMLSyntaxError as exc:
        raise PolicyError(f"malformed XML: {exc.msg}", line=exc.lineno or None, code="invalid_xml") from exc
    docinfo = root.getroottree().docinfo
    if getattr(docinfo, "doctype", "") or docinfo.internalDTD is not None:
        raise PolicyError("XML with a DOCTYPE is not accepted (entities are not allowed in domain XML)",
                          line=1, code="invalid_xml")
    if root.tag != "domain":
        raise PolicyError(f"the root element must be <domain>, not <{root.tag}>", element=str(root.tag),
                          line=line_of(root), code="invalid_xml")
    return root


def line_of(el: etree._Element) -> int | None:
    """Return the line an element started on in the submitted text."""
    line = el.sourceline
    return line if isinstance(line, int) else None


def path_of(el: etree._Element) -> str:
    """Return an element's path below <domain> in local names ('' for the root)."""
    parts: list[str] = []
    node: etree._Element | None = el
    while node is not None and node.getparent() is not None:
        parts.append(etree.QName(node).localname)
        node = node.getparent()
    return "/".join(reversed(parts))


def file_sources(root: etree._Element) -> list[str]:
    """Return the source files of a definition's disks, in order."""
    return [s.get("file", "") for s in root.iterfind("./devices/disk/source") if s.get("file")]


def _text(root: etree._Element, path: str) -> str | None:
    found = root.find(path)
    return None if found is None else (found.text or "").strip()


def check_identity(new: etree._Element, current: etree._Element) -> None:
    """Refuse a different <name> or <uuid> (for everyone: labcloud tracks the VM by both)."""
    for tag in ("name", "uuid"):
        old, now = _text(current, tag), _text(new, tag)
        same = (old or "").lower() == (now or "").lower() if tag == "uuid" else old == now
        if not same:
            el = new.find(tag)
            raise PolicyError(f"<{tag}> cannot change (it is {old!r}; the XML says {now!r}): labcloud tracks "
                              f"the VM by it", tag, line_of(el) if el is not None else None, code="xml_policy")


def canonical(el: etree._Element) -> bytes:
    """Return an element's C14N form without whitespace-only text, for comparing definitions."""
    copy = etree.fromstring(etree.tostring(el), safe_parser())
    for node in copy.iter():
        if node.text is not None and not node.text.strip():
            node.text = None
        if node.tail is not None and not node.tail.strip():
            node.tail = None
    return etree.tostring(copy, method="c14n")


def _deny(el: etree._Element, message: str, attribute: str | None = None) -> PolicyError:
    path = path_of(el) or "domain"
    where = f"<{path}>" + (f" attribute '{attribute}'" if attribute else "")
    return PolicyError(f"{where}: {message}", path, line_of(el), attribute)


def memory_kib(el: etree._Element) -> int:
    """Return a <memory>-like element's amount in KiB."""
    unit = (el.get("unit") or "KiB").lower()
    try:
        return int((el.text or "0").strip()) * MEMORY_UNITS[unit] // 1024
    except (KeyError, ValueError):
        raise _deny(el, f"cannot read the amount {el.text!r} {el.get('unit') or ''}") from None


def _unchanged(el: etree._Element, path: str, current: etree._Element) -> bool:
    """Say whether an element equals one at the same path in the current definition."""
    mine = canonical(el)
    return any(canonical(o) == mine for o in current.iter(etree.Element) if path_of(o) == path)


def _check_tree(new: etree._Element, current: etree._Element) -> None:
    """Default deny over every element and attribute, plus the qemu namespace anywhere."""
    skip: set[etree._Element] = set()
    for el in new.iter():
        if not isinstance(el.tag, str):
            continue  # comments and processing instructions
        qname = etree.QName(el)
        for attr in el.attrib:
            if etree.QName(attr).namespace == QEMU_NS:
                raise _deny(el, "the QEMU namespace (raw QEMU options) is not allowed", str(attr))
        if qname.namespace == QEMU_NS:
            raise _deny(el, "the QEMU namespace (raw QEMU options) is not allowed")
        if el in skip or any(a in skip for a in el.iterancestors()):
            continue
        path = path_of(el)
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if path in UNCHANGED_ONLY:
            if not _unchanged(el, path, current):
                raise _deny(el, REASONS.get(path, "this host setting may only be kept as it is"))
            skip.add(el)
            continue
        if path.startswith("metadata/"):
            if qname.namespace == LABCLOUD_NS and not _unchanged(el, path, current):
                raise _deny(el, "labcloud's own metadata cannot change")
            skip.add(el)
            continue
        if qname.namespace is not None:
            raise _deny(el, f"elements in namespace {qname.namespace} are not allowed here")
        if path in REASONS:
            raise _deny(el, REASONS[path])
        allowed = ALLOWED.get(path)
        if allowed is None and path.startswith("devices/") and qname.localname in DEVICE_CHILDREN:
            allowed = DEVICE_CHILDREN[qname.localname]
        if allowed is None and f"{parent}/*" in ALLOWED:
            allowed = ALLOWED[f"{parent}/*"]
        if allowed is None:
            raise _deny(el, "this element is not allowed for members (default deny); ask an admin")
        for attr in el.attrib:
            if str(attr) not in allowed:
                raise _deny(el, "this attribute is not allowed for members (default deny); ask an admin", str(attr))


def _check_resources(new: etree._Element, limits: Limits) -> None:
    for tag in ("memory", "currentMemory"):
        el = new.find(tag)
        if el is not None and memory_kib(el) > limits.memory_mib * 1024:
            raise _deny(el, f"{memory_kib(el) // 1024} MiB is more than the flavor's {limits.memory_mib} MiB")
    vcpu = new.find("vcpu")
    if vcpu is not None:
        try:
            count = int((vcpu.text or "").strip())
        except ValueError:
            raise _deny(vcpu, f"cannot read the vCPU count {vcpu.text!r}") from None
        if count > limits.vcpus:
            raise _deny(vcpu, f"{count} vCPUs are more than the flavor's {limits.vcpus}")
        if vcpu.get("placement") not in (None, "static"):
            raise _deny(vcpu, "vCPU placement is a host resource", "placement")


def _check_disks(new: etree._Element, current: etree._Element) -> None:
    own = set(file_sources(current))
    for disk in new.iterfind("./devices/disk"):
        kind = disk.get("type", "file")
        if kind not in DISK_TYPES:
            raise _deny(disk, f"disks of type '{kind}' reach the host or network; only the VM's own volumes",
                        "type")
        if disk.get("device", "disk") not in ("disk", "cdrom"):
            raise _deny(disk, "only disk and cdrom devices are allowed", "device")
        source = disk.find("source")
        if source is not None and source.get("file") not in own:
            raise _deny(source, f"{source.get('file')!r} is not one of this VM's volumes", "file")


def _nic_key(nic: etree._Element) -> bytes:
    """The parts of a NIC labcloud decides: type, MAC, source, VLAN, target, filterref."""
    keep = etree.Element("interface", type=nic.get("type", ""))
    for tag in ("mac", "source", "vlan", "target", "filterref"):
        for child in nic.iterfind(tag):
            keep.append(etree.fromstring(etree.tostring(child, with_tail=False), safe_parser()))
    return canonical(keep)


def _check_nics(new: etree._Element, current: etree._Element) -> None:
    known = {_nic_key(n) for n in current.iterfind("./devices/interface")}
    for nic in new.iterfind("./devices/interface"):
        kind = nic.get("type", "")
        if kind not in INTERFACE_TYPES:
            raise _deny(nic, f"interfaces of type '{kind}' reach the host; networks are chosen through labcloud",
                        "type")
        if _nic_key(nic) not in known:
            mac = nic.find("mac")
            raise _deny(nic, f"NIC {mac.get('address') if mac is not None else '(no MAC)'}: bridge, network, "
                        "VLAN, MAC, target and filterref cannot change; networks are chosen through labcloud")


def _check_graphics(new: etree._Element, current: etree._Element) -> None:
    passwords = {g.get("type"): g.get("passwd") for g in current.iterfind("./devices/graphics")}
    for g in new.iterfind("./devices/graphics"):
        if g.get("type") not in passwords:
            raise _deny(g, f"graphics of type '{g.get('type')}' were not set up by labcloud", "type")
        if g.get("passwd") != passwords[g.get("type")]:
            raise _deny(g, "the console password is the controller's and cannot be set, changed or removed",
                        "passwd")
        listens = [g.get("listen")] + [lst.get("address") for lst in g.iterfind("listen")]
        for lst in g.iterfind("listen"):
            if lst.get("type", "address") not in ("address", "none"):
                raise _deny(lst, "graphics may only listen on loopback", "type")
        if any(a is not None and a not in LOOPBACK for a in listens):
            raise _deny(g, "graphics may only listen on loopback (127.0.0.1)", "listen")


def _check_devices(new: etree._Element) -> None:
    for tag in ("serial", "console", "channel"):
        for dev in new.iterfind(f"./devices/{tag}"):
            if dev.get("type", "pty") not in CHARDEV_TYPES:
                raise _deny(dev, f"character devices of type '{dev.get('type')}' reach host files or the network",
                            "type")
    for rng in new.iterfind("./devices/rng"):
        backend = rng.find("backend")
        if backend is not None:
            if backend.get("model") not in ("random", "builtin"):
                raise _deny(backend, "only the random and builtin RNG backends are allowed", "model")
            if backend.get("model") == "random" and (backend.text or "").strip() not in RNG_HOST_SOURCES:
                raise _deny(backend, f"the RNG may only read {' or '.join(sorted(RNG_HOST_SOURCES))}")
    for tpm in new.iterfind("./devices/tpm/backend"):
        if tpm.get("type") != "emulator":
            raise _deny(tpm, "only an emulated TPM is allowed (passthrough reaches the host)", "type")
    for audio in new.iterfind("./devices/audio"):
        if audio.get("type") not in ("none", "spice"):
            raise _deny(audio, "audio backends other than none and spice reach the host", "type")
    for inp in new.iterfind("./devices/input"):
        if inp.get("type") not in ("mouse", "keyboard", "tablet"):
            raise _deny(inp, "only mouse, keyboard and tablet inputs are allowed", "type")
    smbios = new.find("./os/smbios")
    if smbios is not None and smbios.get("mode") == "host":
        raise _deny(smbios, "the host's SMBIOS data is not shown to guests", "mode")


def check_member(new: etree._Element, current: etree._Element, limits: Limits) -> None:
    """Apply SPEC §7 for a non-admin: raise PolicyError naming the first offending element."""
    if new.get("type") != current.get("type"):
        raise _deny(new, "the virtualisation type is the host's", "type")
    # The device checks come first so a refusal names the device and says why, before the
    # default deny would name one of its children.
    _check_disks(new, current)
    _check_nics(new, current)
    _check_graphics(new, current)
    _check_devices(new)
    _check_tree(new, current)
    _check_resources(new, limits)


def libvirt_location(message: str, root: etree._Element) -> tuple[int | None, str | None]:
    """Return (line, element) that libvirt's message points at, as far as it says.

    libvirt names a line for parse errors only; a schema failure ("Extra element on_crash in
    interleave") names an element, which is looked up in the submitted document.
    """
    found = re.search(r"\bline (\d+)", message) or re.search(r"\(domain_definition\):(\d+):", message)
    if found:
        return int(found.group(1)), None
    for name in re.findall(r"[Ee]lement ([A-Za-z][\w.-]*)", message):
        if name == "domain":
            continue
        for el in root.iter(name):
            return line_of(el), path_of(el)
    return None, None
