"""Adoption of domains defined outside labcloud: inspect their disks and NICs, then take them in.

labcloud moves a VM's root disk between hosts as ``<uuid>-root.qcow2``, an overlay on a cached
base image (``base-<sha256>.qcow2``) in the host's pool. A domain can be adopted when its one
writable disk is such an overlay in the pool; adoption renames the volume to labcloud's name (the
domain must be shut off for that) and writes labcloud's metadata into the domain.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import libvirt
from lxml import etree

from hostagent import domainxml
from hostagent.errors import VerbError, from_libvirt
from hostagent.hypervisor import Hypervisor
from hostagent.storage import Storage, vm_volume_names
from hostagent.vms import describe, state_of

log = logging.getLogger(__name__)
BASE_RE = re.compile(r"^base-([0-9a-f]{64})\.qcow2$")
KIB = 1024
GIB = 1024**3


def _first(node: etree._Element, path: str) -> str:
    found = node.xpath(path)
    return str(found[0]) if isinstance(found, list) and found else ""


def _elements(node: etree._Element, path: str) -> list[etree._Element]:
    found = node.xpath(path)
    return [e for e in found if isinstance(e, etree._Element)] if isinstance(found, list) else []


class Adoption:
    """The adoption verbs of one host."""

    def __init__(self, hv: Hypervisor, storage: Storage) -> None:
        self.hv, self.storage = hv, storage

    def _volume_facts(self, path: str) -> dict[str, Any]:
        """Return what the pool knows of a disk file: volume name, pool, capacity, backing image."""
        try:
            vol = self.hv.conn.storageVolLookupByPath(path)
        except libvirt.libvirtError:
            return {"volume": None, "pool": None}
        pool = vol.storagePoolLookupByVolume().name()
        _type, capacity, _alloc = vol.info()
        vxml = domainxml.parse_xml(vol.XMLDesc(0))
        backing = _first(vxml, "./backingStore/path/text()")
        match = BASE_RE.match(Path(backing).name) if backing else None
        return {"volume": vol.name(), "pool": pool, "capacity_bytes": int(capacity),
                "format": _first(vxml, "./target/format/@type"), "backing": backing or None,
                "image_sha256": match.group(1) if match else None}

    def _guest_addresses(self, dom: libvirt.virDomain) -> dict[str, list[str]]:
        """Return MAC -> IPv4 addresses from the guest agent; empty when it does not answer."""
        if not dom.isActive():
            return {}
        try:
            ifaces = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)
        except libvirt.libvirtError:
            return {}
        out: dict[str, list[str]] = {}
        for data in ifaces.values():
            mac = str(data.get("hwaddr") or "").lower()
            addrs = [a["addr"] for a in data.get("addrs") or [] if a.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4]
            if mac and addrs:
                out[mac] = addrs
        return out

    def inspect(self, uuid: str) -> dict[str, Any]:
        """Describe a domain for adoption: size, disks, NICs, guest addresses and what prevents adopting it."""
        dom = self.hv.require(uuid)
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        root = domainxml.parse_xml(xml)
        disks, nics, problems = [], [], []
        for el in _elements(root, "./devices/disk"):
            entry: dict[str, Any] = {"device": el.get("device", "disk"), "type": el.get("type"),
                                     "target": _first(el, "./target/@dev"),
                                     "path": _first(el, "./source/@file") or None,
                                     "readonly": bool(_elements(el, "./readonly"))}
            if entry["path"]:
                entry.update(self._volume_facts(entry["path"]))
            disks.append(entry)
        writable = [d for d in disks if d["device"] == "disk" and not d["readonly"]]
        others = [d for d in disks if d not in writable and d["path"]]
        if len(writable) != 1:
            problems.append(f"labcloud manages VMs with exactly one writable disk; this domain has {len(writable)}")
        else:
            disk = writable[0]
            if disk["target"] != "vda" or disk["type"] != "file":
                problems.append(f"the disk must be a file attached as vda (virtio); it is {disk['type']}"
                                f" {disk['target']}")
            if disk.get("pool") != self.storage.pool_name:
                problems.append(f"the disk {disk['path']} is not a volume of labcloud's pool {self.storage.pool_name}"
                                f" ({self.storage.pool_path}); move it there (virsh vol-create-as ... then copy)")
            elif disk.get("format") != "qcow2" or not disk.get("image_sha256"):
                problems.append("the disk must be a qcow2 overlay on a cached labcloud base image"
                                " (base-SHA256.qcow2 in the pool), so that it can migrate")
        if others:
            problems.append("other disks or CD-ROMs with a file are not supported: "
                            + ", ".join(str(d["path"]) for d in others))
        for iface in _elements(root, "./devices/interface"):
            nic = {"mac": _first(iface, "./mac/@address").lower(), "type": iface.get("type"),
                   "bridge": _first(iface, "./source/@bridge") or None}
            if nic["type"] != "bridge" or not nic["bridge"]:
                problems.append(f"interface {nic['mac']} is of type {nic['type']}; only bridge interfaces are managed")
            nics.append(nic)
        memory = int(_first(root, "./memory/text()") or 0)
        unit = _first(root, "./memory/@unit") or "KiB"
        root_disk = writable[0] if len(writable) == 1 else {}
        return {
            "uuid": uuid, "name": dom.name(), "state": state_of(dom),
            "vcpus": int(_first(root, "./vcpu/text()") or 1),
            "memory_mib": memory * domainxml.MEMORY_UNITS.get(unit.lower(), KIB) // (KIB * KIB),
            "disk_gib": -(-int(root_disk.get("capacity_bytes") or 0) // GIB),
            "image_sha256": root_disk.get("image_sha256"), "disks": disks, "nics": nics,
            "guest_addresses": self._guest_addresses(dom), "labcloud": domainxml.read_metadata(xml),
            "problems": problems,
        }

    def adopt(self, uuid: str, vm_id: str, owner: str) -> dict[str, Any]:
        """Give the root disk labcloud's name and the domain labcloud's metadata (idempotent)."""
        facts = self.inspect(uuid)
        if facts["problems"]:
            raise VerbError("cannot adopt: " + "; ".join(facts["problems"]), 409, "not_adoptable")
        dom = self.hv.require(uuid)
        disk = next(d for d in facts["disks"] if d["device"] == "disk" and not d["readonly"])
        wanted, _seed = vm_volume_names(uuid)
        if disk["volume"] != wanted:
            if dom.isActive():
                raise VerbError(f"the disk volume {disk['volume']} must be renamed to {wanted}, which needs the"
                                " domain shut off; shut it down and adopt again", 409, "running")
            self._rename_root(dom, Path(disk["path"]), wanted)
        self._set_metadata(dom, vm_id, owner)
        log.info("adopted domain %s (%s) as VM %s", dom.name(), uuid, vm_id)
        return describe(dom)

    def _rename_root(self, dom: libvirt.virDomain, path: Path, wanted: str) -> None:
        target = Path(self.storage.pool_path) / wanted
        if target.exists():
            raise VerbError(f"{target} exists already; remove it or adopt another domain", 409, "exists")
        root = domainxml.parse_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE))
        sources = [s for s in _elements(root, "./devices/disk/source") if s.get("file") == str(path)]
        os.rename(path, target)
        for source in sources:
            source.set("file", str(target))
        try:
            self.hv.conn.defineXMLFlags(etree.tostring(root, encoding="unicode"), 0)
        except libvirt.libvirtError as exc:
            os.rename(target, path)  # leave the domain as it was
            raise from_libvirt(exc, "redefining the domain with the renamed disk") from exc
        finally:
            self.storage.pool.refresh(0)

    def _set_metadata(self, dom: libvirt.virDomain, vm_id: str, owner: str) -> None:
        instance = etree.Element("instance")
        for key, value in (("vm-id", vm_id), ("owner", owner), ("created-by", "labcloud-adoption")):
            etree.SubElement(instance, key).text = value
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0)
        try:
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, etree.tostring(instance, encoding="unicode"),
                            domainxml.LABCLOUD_PREFIX, domainxml.LABCLOUD_NS, flags)
        except libvirt.libvirtError as exc:
            raise from_libvirt(exc, "writing labcloud's metadata into the domain") from exc
