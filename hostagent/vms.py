"""VM verbs on the local libvirt: create, lifecycle, destroy, list. Idempotent by UUID."""

from __future__ import annotations

import logging
import time
from typing import Any

import libvirt

from hostagent import domainxml, seed
from hostagent.errors import VerbError, from_libvirt
from hostagent.hypervisor import Hypervisor
from hostagent.storage import Storage

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


class Vms:
    """The VM verbs of one host."""

    def __init__(self, hv: Hypervisor, storage: Storage, virt_type: str,
                 storages: dict[str, Storage] | None = None, pause_after_define_s: float = 0.0) -> None:
        self.hv, self.storage, self.virt_type = hv, storage, virt_type
        self.storages = storages or {"local": storage}
        self.pause_after_define_s = pause_after_define_s  # fault injection (tests only)

    def _storage(self, kind: str) -> Storage:
        storage = self.storages.get(kind)
        if storage is None:
            raise VerbError(f"this host has no {kind} storage pool; configure shared_pool_path", 409, "no_pool")
        return storage

    def _get(self, uuid: str) -> libvirt.virDomain:
        dom = self.hv.domain(uuid)
        if dom is None:
            raise VerbError(f"no domain {uuid} on this host", 404, "not_found")
        return dom

    def create(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Create root disk and seed, define and start; if the domain exists, just make it run."""
        uuid = spec["uuid"]
        dom = self.hv.domain(uuid)
        if dom is None:
            storage = self._storage(spec.get("storage", "local"))
            root = storage.create_overlay(uuid, spec["image_sha256"], int(spec["disk_gib"]) * GIB)
            files = seed.build_seed_files(
                instance_id=uuid,
                hostname=spec["hostname"],
                nics=[seed.SeedNic(mac=n["mac"], addresses=n["addresses"], gateway=n.get("gateway"),
                                   dns=n.get("dns") or [], name=f"eth{i}") for i, n in enumerate(spec["nics"])],
                ssh_keys=spec.get("ssh_keys") or [],
                password=spec.get("password"),
                user_data=spec.get("user_data"),
            )
            seed_path = storage.write_seed(uuid, seed.seed_iso_bytes(files))
            xml = domainxml.build_domain(domainxml.DomainSpec(
                uuid=uuid, name=spec["name"], vcpus=int(spec["vcpus"]), memory_mib=int(spec["memory_mib"]),
                root_disk=root, seed_disk=seed_path,
                nics=[domainxml.NicSpec(mac=n["mac"], bridge=n["bridge"]) for n in spec["nics"]],
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
        return describe(self._get(uuid))

    def action(self, uuid: str, action: str) -> dict[str, Any]:
        """Run start, shutdown, poweroff or reboot; doing what is already done is not an error."""
        dom = self._get(uuid)
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
        if dom is not None:
            try:
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                                  | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                                  | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise from_libvirt(exc, f"destroying domain {uuid}") from exc
        deleted = [name for storage in self.storages.values() for name in storage.delete_vm_volumes(uuid)]
        return {"uuid": uuid, "domain_removed": existed, "volumes_deleted": deleted}

    def undefine(self, uuid: str, delete_volumes: bool) -> dict[str, Any]:
        """Undefine a stopped domain (it moved to another host); optionally delete its local volumes."""
        dom = self._get(uuid)
        if dom.isActive():
            raise VerbError("the domain is running here; stop it before undefining", 409, "running")
        try:
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError as exc:
            raise from_libvirt(exc, f"undefining {uuid}") from exc
        deleted = self.storage.delete_vm_volumes(uuid) if delete_volumes else []
        return {"uuid": uuid, "volumes_deleted": deleted}

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
        dom = self._get(uuid)
        try:
            hostname = dom.hostname(libvirt.VIR_DOMAIN_GET_HOSTNAME_AGENT)
            ifaces = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)
        except libvirt.libvirtError as exc:
            raise from_libvirt(exc, "asking the guest agent") from exc
        addresses = {
            name: {"mac": data.get("hwaddr"), "addrs": [a["addr"] for a in data.get("addrs") or []]}
            for name, data in ifaces.items()
        }
        return {"hostname": hostname, "interfaces": addresses}
