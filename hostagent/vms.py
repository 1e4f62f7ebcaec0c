"""VM verbs on the local libvirt: create, lifecycle, destroy, list. Idempotent by UUID."""

from __future__ import annotations

import logging
import time
import uuid as uuidlib
from typing import Any

import libvirt
from lxml import etree

from hostagent import domainxml, seed
from hostagent.errors import VerbError, from_libvirt
from hostagent.hypervisor import Hypervisor
from hostagent.inject import inject_network
from hostagent.network import LinuxVlans, plan_nics, vlan_of
from hostagent.storage import Storage, vm_volume_names

log = logging.getLogger(__name__)
GIB = 1024**3

STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate", libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked", libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown", libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed", libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}
GUEST_FLAGS = libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN | libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT


def state_of(dom: libvirt.virDomain) -> str:
    """Return a domain's state as a word."""
    state, _reason = dom.state()
    return STATES.get(state, "nostate")


def describe(dom: libvirt.virDomain, with_xml: bool = True) -> dict[str, Any]:
    """Return uuid, name, state, labcloud metadata and (optionally) the inactive XML."""
    out: dict[str, Any] = {"uuid": dom.UUIDString(), "name": dom.name(), "state": state_of(dom)}
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    out["labcloud"] = domainxml.read_metadata(xml)
    if with_xml:
        out["xml"] = xml
    return out


def _cpu_count(spec: str) -> int:
    """Count the CPUs of a list like '0-1,3'."""
    count = 0
    for part in filter(None, spec.split(",")):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def _online_cpus(dom: libvirt.virDomain) -> int | None:
    """Return how many vCPUs the guest sees online (qemu-guest-agent), or None when it cannot say."""
    try:
        info: Any = dom.guestVcpus()  # a dict, whatever the binding's annotation says
        return _cpu_count(str(info.get("online", "")))
    except (libvirt.libvirtError, ValueError):
        return None


class Vms:
    """The VM verbs of one host."""

    def __init__(self, hv: Hypervisor, storage: Storage, virt_type: str,
                 storages: dict[str, Storage] | None = None, switch: str = "linux",
                 vlans: LinuxVlans | None = None, pause_after_define_s: float = 0.0) -> None:
        self.hv, self.storage, self.virt_type = hv, storage, virt_type
        self.storages = storages or {"local": storage}
        self.switch = switch
        self.vlans = vlans or LinuxVlans()
        self.inject = inject_network
        self.pause_after_define_s = pause_after_define_s  # fault injection (tests only)

    def _storage(self, kind: str) -> Storage:
        storage = self.storages.get(kind)
        if storage is None:
            raise VerbError(f"this host has no {kind} storage pool; configure shared_pool_path", 409, "no_pool")
        return storage

    def create(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Create root disk and seed, define and start; if the domain exists, just make it run."""
        uuid = spec["uuid"]
        dom = self.hv.domain(uuid)
        if dom is None:
            storage = self._storage(spec.get("storage", "local"))
            root = storage.create_overlay(uuid, spec["image_sha256"], int(spec["disk_gib"]) * GIB)
            seed_path: str | None = None
            if spec.get("cloud_init", True):
                files = seed.build_seed_files(
                    instance_id=uuid,
                    hostname=spec["hostname"],
                    nics=seed_nics(spec["nics"]),
                    ssh_keys=spec.get("ssh_keys") or [],
                    password=spec.get("password"),
                    user_data=spec.get("user_data"),
                )
                seed_path = storage.write_seed(uuid, seed.seed_iso_bytes(files))
            else:  # no cloud-init in the image: write its network files into the disk itself
                self.inject(root, spec["hostname"], seed_nics(spec["nics"]))
            nics, vlans = plan_nics(spec["nics"], self.switch)
            for vlan in vlans:
                self.vlans.ensure(vlan)
            xml = domainxml.build_domain(domainxml.DomainSpec(
                uuid=uuid, name=spec["name"], vcpus=int(spec["vcpus"]), memory_mib=int(spec["memory_mib"]),
                root_disk=root, seed_disk=seed_path, nics=nics, vlans=vlans,
                virt_type=self.virt_type, vm_id=spec.get("vm_id", uuid), owner=spec.get("owner", ""),
            ))
            try:
                dom = self.hv.conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
            except libvirt.libvirtError as exc:
                raise from_libvirt(exc, "defining the domain") from exc
            log.info("defined domain %s (%s)", spec["name"], uuid)
            if self.pause_after_define_s:
                log.warning("fault injection: pausing %g s before starting %s", self.pause_after_define_s, uuid)
                time.sleep(self.pause_after_define_s)
        if not dom.isActive():
            try:
                dom.create()
            except libvirt.libvirtError as exc:
                raise from_libvirt(exc, f"starting domain {spec['name']}") from exc
            log.info("started domain %s", spec["name"])
        return describe(dom)

    def get(self, uuid: str) -> dict[str, Any]:
        """Describe one domain."""
        return describe(self.hv.require(uuid))

    def action(self, uuid: str, action: str) -> dict[str, Any]:
        """Run start, shutdown, poweroff or reboot; doing what is already done is not an error."""
        dom = self.hv.require(uuid)
        try:
            if action == "start":
                if not dom.isActive():
                    dom.create()
            elif action == "poweroff":
                if dom.isActive():
                    dom.destroy()
            elif action == "shutdown":
                if dom.isActive():
                    dom.shutdownFlags(GUEST_FLAGS)
            elif action == "reboot":
                if not dom.isActive():
                    raise VerbError("the VM is not running; start it instead", 409, "wrong_state")
                dom.reboot(GUEST_FLAGS)
            else:
                raise VerbError(f"unknown action {action!r}", 404, "not_found")
        except libvirt.libvirtError as exc:
            raise from_libvirt(exc, f"{action} of {dom.name()}") from exc
        return {"uuid": uuid, "state": state_of(dom)}

    def destroy(self, uuid: str) -> dict[str, Any]:
        """Force off, undefine and delete the VM's volumes; nothing to do is success."""
        dom = self.hv.domain(uuid)
        existed = dom is not None
        vlans: list[domainxml.VlanRecord] = []
        if dom is not None:
            try:
                vlans = domainxml.vlan_records(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                                  | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                                  | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise from_libvirt(exc, f"destroying domain {uuid}") from exc
        deleted = [name for storage in self.storages.values() for name in storage.delete_vm_volumes(uuid)]
        return {"uuid": uuid, "domain_removed": existed, "volumes_deleted": deleted,
                "links_removed": self.release_vlans(vlans)}

    def undefine(self, uuid: str, delete_volumes: bool) -> dict[str, Any]:
        """Undefine a stopped domain (it moved to another host); optionally delete its local volumes."""
        dom = self.hv.require(uuid)
        if dom.isActive():
            raise VerbError("the domain is running here; stop it before undefining", 409, "running")
        vlans = domainxml.vlan_records(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        try:
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError as exc:
            raise from_libvirt(exc, f"undefining {uuid}") from exc
        deleted = self.storage.delete_vm_volumes(uuid) if delete_volumes else []
        return {"uuid": uuid, "volumes_deleted": deleted, "links_removed": self.release_vlans(vlans)}

    def ensure_vlans(self, nics: list[dict[str, Any]]) -> None:
        """Make the VLAN devices and bridges of vlan-network NICs exist here (Linux switch hosts only)."""
        if self.switch == "linux":
            for vlan in (vlan_of(n) for n in nics):
                if vlan is not None:
                    self.vlans.ensure(vlan)

    def release_vlans(self, vlans: list[domainxml.VlanRecord]) -> list[str]:
        """Remove the VLAN devices a domain that left this host had, if no other domain uses them."""
        return self.vlans.release_unused(vlans, self.bridges_in_use()) if vlans else []

    def bridges_in_use(self) -> set[str]:
        """Return the bridges the interfaces of every domain on this host (running or not) plug into."""
        used: set[str] = set()
        for dom in self.hv.conn.listAllDomains(0):
            try:
                used.update(domainxml.interface_bridges(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
        return used

    def renetwork(self, uuid: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Give a stopped VM new addresses: a new seed (new instance-id, so cloud-init applies it), new filters."""
        dom = self.hv.require(uuid)
        if dom.isActive():
            raise VerbError("the VM is running; shut it down before changing its addresses", 409, "running")
        root_name, seed_name = vm_volume_names(uuid)
        instance_id: str | None = None
        with_seed = next((s for s in self.storages.values() if s.volume(seed_name) is not None), None)
        with_root = next((s for s in self.storages.values() if s.volume(root_name) is not None), None)
        if with_seed is not None:
            _size, chunks = with_seed.read_volume(seed_name)
            files = seed.read_seed_bytes(b"".join(chunks))
            instance_id = str(uuidlib.uuid4())
            files = seed.renumber(files, instance_id, seed_nics(spec["nics"]))
            with_seed.write_seed(uuid, seed.seed_iso_bytes(files))
        elif with_root is not None:  # an image without cloud-init: rewrite the files in its disk
            root_vol = with_root.volume(root_name)
            assert root_vol is not None
            self.inject(root_vol.path(), str(spec.get("hostname") or dom.name()), seed_nics(spec["nics"]))
        else:
            raise VerbError(f"VM {uuid} has neither a seed nor a root volume on this host", 409, "seed_missing")
        nics, _vlans = plan_nics(spec["nics"], self.switch)
        root = domainxml.parse_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE))
        set_filter_ips(root, {n.mac.lower(): n.filter_ip for n in nics})
        try:
            dom = self.hv.conn.defineXMLFlags(etree.tostring(root, encoding="unicode"),
                                              libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        except libvirt.libvirtError as exc:
            raise from_libvirt(exc, "redefining the domain with its new addresses") from exc
        return {"uuid": uuid, "instance_id": instance_id, "xml": dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)}

    def list(self) -> list[dict[str, Any]]:
        """Describe every domain on the host (without XML)."""
        out = []
        for dom in self.hv.conn.listAllDomains(0):
            try:
                out.append(describe(dom, with_xml=False))
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:  # vanished meanwhile
                    raise
        return out

    def guest_info(self, uuid: str) -> dict[str, Any]:
        """Ask qemu-guest-agent for the hostname and addresses."""
        dom = self.hv.require(uuid)
        try:
            hostname = dom.hostname(libvirt.VIR_DOMAIN_GET_HOSTNAME_AGENT)
            ifaces = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)
        except libvirt.libvirtError as exc:
            raise from_libvirt(exc, "asking the guest agent") from exc
        addresses = {
            name: {"mac": data.get("hwaddr"), "addrs": [a["addr"] for a in data.get("addrs") or []]}
            for name, data in ifaces.items()
        }
        return {"hostname": hostname, "interfaces": addresses, "cpus": _online_cpus(dom)}


def seed_nics(nics: list[dict[str, Any]]) -> list[seed.SeedNic]:
    """Return the seed's view of the controller's NIC specs (eth0, eth1… in order)."""
    return [seed.SeedNic(mac=n["mac"], addresses=n["addresses"], gateway=n.get("gateway"), dns=n.get("dns") or [],
                         name=f"eth{i}") for i, n in enumerate(nics)]


def set_filter_ips(root: etree._Element, ips: dict[str, str | None]) -> None:
    """Point each interface's clean-traffic filter at its NIC's new address (by MAC), in place."""
    for interface in root.iterfind("./devices/interface"):
        mac_el = interface.find("mac")
        if mac_el is None or mac_el.get("address", "").lower() not in ips:
            continue
        ip = ips[mac_el.get("address", "").lower()]
        for old in interface.findall("filterref"):
            interface.remove(old)
        if ip is not None:
            filterref = etree.SubElement(interface, "filterref", filter="clean-traffic")
            etree.SubElement(filterref, "parameter", name="IP", value=ip)
