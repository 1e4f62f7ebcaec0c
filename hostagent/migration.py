"""Migration verbs: prepare the destination, run libvirt's peer-to-peer migration, report, cancel.

A migration runs in a thread of the source agent (migrateToURI3 blocks until done);
the controller polls its state and libvirt's job statistics, and may cancel it.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from controller import reqid
from hostagent import domainxml
from hostagent.errors import VerbError, from_libvirt
from hostagent.hypervisor import Hypervisor
from hostagent.storage import Storage, vm_volume_names

log = logging.getLogger(__name__)
GIB = 1024**3

LIVE_FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
              | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_AUTO_CONVERGE)


@dataclass
class Job:
    """One outgoing migration, as the source agent sees it."""

    uuid: str
    dest: str
    started: float = field(default_factory=time.monotonic)
    state: str = "running"          # running, succeeded, failed, cancelled
    error: str | None = None
    cancel_requested: bool = False
    last_stats: dict[str, Any] = field(default_factory=dict)


class Migrations:
    """The migration verbs of one host."""

    def __init__(self, hv: Hypervisor, storages: dict[str, Storage], pki_dir: str | None) -> None:
        self.hv, self.storages, self.pki_dir = hv, storages, pki_dir
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def _dest_uri(self, address: str) -> str:
        if self.pki_dir:
            return f"qemu+tls://{address}/system?pkipath={self.pki_dir}"
        return f"qemu+tcp://{address}/system"  # lab without TLS only; flagged by the controller

    def prepare_incoming(self, uuid: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Make the destination ready: bridges present, base image cached, root and seed volumes made."""
        missing = [b for b in spec.get("bridges", []) if not Path(f"/sys/class/net/{b}/bridge").exists()]
        if missing:
            raise VerbError(f"bridge(s) {', '.join(missing)} missing on this host; create them or choose "
                            "another destination", 409, "network_missing")
        if self.hv.domain(uuid) is not None:
            raise VerbError(f"domain {uuid} already exists on the destination", 409, "exists")
        storage = self.storages[spec.get("storage", "local")]
        if spec.get("storage", "local") == "local":
            root = storage.create_overlay(uuid, spec["image_sha256"], int(spec["disk_gib"]) * GIB)
            seed = storage.write_seed(uuid, base64.b64decode(spec["seed"])) if spec.get("seed") else None
        else:
            storage.pool.refresh(0)  # the shared directory already holds the volumes
            root_name, seed_name = vm_volume_names(uuid)
            vol = storage.volume(root_name)
            if vol is None:
                raise VerbError(f"the VM's disk is not in shared pool {storage.pool_name} on this host; "
                                "is the shared storage mounted here?", 409, "storage_missing")
            root = vol.path()
            seed_vol = storage.volume(seed_name)
            seed = seed_vol.path() if seed_vol is not None else None
        return {"root": root, "seed": seed}

    def abort_incoming(self, uuid: str, storage_kind: str) -> dict[str, Any]:
        """Remove what a failed incoming migration left; never touches a running domain or shared disks."""
        dom = self.hv.domain(uuid)
        if dom is not None:
            state, _reason = dom.state()
            if state == libvirt.VIR_DOMAIN_RUNNING:
                raise VerbError(f"domain {uuid} runs on this host; not removing it", 409, "running")
            try:
                if dom.isActive():  # an incoming copy, paused until a migration that failed would finish
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise from_libvirt(exc, f"removing the incoming copy of {uuid}") from exc
        deleted = self.storages["local"].delete_vm_volumes(uuid) if storage_kind == "local" else []
        return {"domain_removed": dom is not None, "volumes_deleted": deleted}

    def seed_bytes(self, uuid: str, storage_kind: str) -> str:
        """Return the VM's seed volume as base64 (the destination of a copy needs the same one)."""
        _root, seed_name = vm_volume_names(uuid)
        vol = self.storages[storage_kind].volume(seed_name)
        if vol is None:
            return ""
        stream = self.hv.conn.newStream(0)
        chunks: list[bytes] = []
        vol.download(stream, 0, 0, 0)
        while True:
            data = stream.recv(1 << 20)
            if not data or not isinstance(data, bytes):
                break
            chunks.append(data)
        stream.finish()
        return base64.b64encode(b"".join(chunks)).decode()

    def start(self, uuid: str, body: dict[str, Any]) -> dict[str, Any]:
        """Start migrating a running (live) or stopped (offline, shared storage) domain."""
        dom = self.hv.require(uuid)
        with self._lock:
            job = self.jobs.get(uuid)
            if job is not None and job.state == "running":
                raise VerbError("a migration of this VM is already running", 409, "busy")
            job = Job(uuid, body["dest_address"])
            self.jobs[uuid] = job
        flags = LIVE_FLAGS
        if body.get("copy_storage"):
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
        if body.get("unsafe"):
            flags |= libvirt.VIR_MIGRATE_UNSAFE
        if body.get("tls", bool(self.pki_dir)):
            flags |= libvirt.VIR_MIGRATE_TLS
        params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_URI: f"tcp://{body['dest_address']}"}
        if body.get("bandwidth_mib"):
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(body["bandwidth_mib"])
        if body.get("copy_storage"):
            params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = ["vda"]
        dconn = self._dest_uri(body["dest_address"])
        request_id = reqid.get()

        def run() -> None:
            reqid.set(request_id)
            log.info("migrating %s to %s (flags %#x)", uuid, dconn, flags)
            try:
                dom.migrateToURI3(dconn, params, flags)
            except libvirt.libvirtError as exc:
                job.error = exc.get_error_message() or str(exc)
                job.state = "cancelled" if job.cancel_requested else "failed"
                log.warning("migration of %s %s: %s", uuid, job.state, job.error)
            else:
                job.state = "succeeded"
                log.info("migration of %s done in %.1f s", uuid, time.monotonic() - job.started)

        threading.Thread(target=run, name=f"migrate-{uuid[:8]}", daemon=True).start()
        return self.status(uuid)

    def status(self, uuid: str) -> dict[str, Any]:
        """Return the job's state and libvirt's statistics while it runs."""
        job = self.jobs.get(uuid)
        if job is None:
            raise VerbError(f"no migration of {uuid} is known on this host", 404, "not_found")
        if job.state == "running":
            dom = self.hv.domain(uuid)
            try:
                stats = dom.jobStats(0) if dom is not None else {}
            except libvirt.libvirtError:
                stats = {}
            if stats:
                job.last_stats = stats
        stats = job.last_stats
        total = stats.get("data_total") or stats.get("memory_total") or 0
        remaining = stats.get("data_remaining", stats.get("memory_remaining", 0)) or 0
        percent = int(100 * (total - remaining) / total) if total else 0
        return {"uuid": uuid, "state": job.state, "error": job.error, "elapsed_s": time.monotonic() - job.started,
                "percent": percent if job.state == "running" else 100 if job.state == "succeeded" else percent,
                "data_total": total, "data_remaining": remaining,
                "bandwidth_bps": stats.get("memory_bps", 0), "downtime_ms": stats.get("downtime", 0)}

    def cancel(self, uuid: str) -> dict[str, Any]:
        """Abort a running migration; the VM stays on this host."""
        job = self.jobs.get(uuid)
        if job is None or job.state != "running":
            raise VerbError("no running migration of this VM", 409, "not_running")
        job.cancel_requested = True
        dom = self.hv.domain(uuid)
        if dom is not None:
            try:
                dom.abortJob()
            except libvirt.libvirtError as exc:
                raise from_libvirt(exc, "cancelling the migration") from exc
        return self.status(uuid)

    def cleanup_source(self, uuid: str) -> dict[str, Any]:
        """Delete the local volumes of a VM that left this host; refused while a domain remains."""
        if self.hv.domain(uuid) is not None:
            raise VerbError(f"domain {uuid} is still defined here; not deleting its disks", 409, "exists")
        return {"volumes_deleted": self.storages["local"].delete_vm_volumes(uuid)}

    def define_offline(self, xml: str) -> dict[str, Any]:
        """Define (not start) a stopped VM moved here by an offline migration."""
        try:
            dom = self.hv.conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        except libvirt.libvirtError as exc:
            raise from_libvirt(exc, "defining the migrated domain") from exc
        return {"uuid": dom.UUIDString(), "labcloud": domainxml.read_metadata(xml)}
