"""The host's storage pool: cached base images and per-VM volumes, via libvirt's storage API."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import libvirt
from lxml import etree

from hostagent.errors import VerbError, from_libvirt
from hostagent.hypervisor import Hypervisor

log = logging.getLogger(__name__)
CHUNK = 1 << 20


def base_name(sha256: str) -> str:
    """Return the volume name of a cached base image."""
    return f"base-{sha256}.qcow2"


def vm_volume_names(uuid: str) -> tuple[str, str]:
    """Return the names of a VM's root overlay and seed volumes."""
    return f"{uuid}-root.qcow2", f"{uuid}-seed.iso"


def _pool_xml(name: str, path: str) -> str:
    pool = etree.Element("pool", type="dir")
    etree.SubElement(pool, "name").text = name
    target = etree.SubElement(pool, "target")
    etree.SubElement(target, "path").text = path
    perms = etree.SubElement(target, "permissions")
    etree.SubElement(perms, "mode").text = "0711"
    return etree.tostring(pool, encoding="unicode")


def _volume_xml(name: str, capacity: int, fmt: str, mode: str = "0600", backing: tuple[str, str] | None = None) -> str:
    vol = etree.Element("volume")
    etree.SubElement(vol, "name").text = name
    etree.SubElement(vol, "capacity", unit="bytes").text = str(capacity)
    target = etree.SubElement(vol, "target")
    etree.SubElement(target, "format", type=fmt)
    perms = etree.SubElement(target, "permissions")
    etree.SubElement(perms, "mode").text = mode
    if backing:
        store = etree.SubElement(vol, "backingStore")
        etree.SubElement(store, "path").text = backing[0]
        etree.SubElement(store, "format", type=backing[1])
    return etree.tostring(vol, encoding="unicode")


class Storage:
    """A libvirt dir pool holding base images and VM disks."""

    def __init__(self, hv: Hypervisor, pool_name: str, pool_path: str) -> None:
        self.hv, self.pool_name, self.pool_path = hv, pool_name, pool_path
        self._image_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    @property
    def pool(self) -> libvirt.virStoragePool:
        """Return the pool, defining and starting it when needed (idempotent)."""
        conn = self.hv.conn
        try:
            pool = conn.storagePoolLookupByName(self.pool_name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise from_libvirt(exc, "looking up the storage pool") from exc
            log.info("defining storage pool %s at %s", self.pool_name, self.pool_path)
            try:
                pool = conn.storagePoolDefineXML(_pool_xml(self.pool_name, self.pool_path), 0)
                pool.build(0)
            except libvirt.libvirtError as exc:
                raise from_libvirt(exc, f"creating storage pool at {self.pool_path}") from exc
        if not pool.isActive():
            try:
                pool.create(0)
                pool.setAutostart(1)
            except libvirt.libvirtError as exc:
                raise from_libvirt(exc, f"starting storage pool {self.pool_name}") from exc
        return pool

    def volume(self, name: str) -> libvirt.virStorageVol | None:
        """Return a volume of the pool by name, or None."""
        try:
            return self.pool.storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return None
            raise from_libvirt(exc, f"looking up volume {name}") from exc

    def space(self) -> tuple[int, int]:
        """Return (capacity, available) bytes of the pool."""
        pool = self.pool
        pool.refresh(0)
        _state, capacity, _allocation, available = pool.info()
        return int(capacity), int(available)

    def _image_lock(self, sha256: str) -> threading.Lock:
        with self._locks_lock:
            return self._image_locks.setdefault(sha256, threading.Lock())

    def ensure_image(self, sha256: str, size: int, chunks: Iterable[bytes] | None) -> tuple[str, bool]:
        """Cache a base image from a stream of chunks unless present; return (path, fetched).

        chunks is only consumed when the image is missing; its SHA-256 must match.
        """
        name = base_name(sha256)
        with self._image_lock(sha256):
            vol = self.volume(name)
            if vol is not None:
                return vol.path(), False
            if chunks is None:
                raise VerbError(f"image {sha256} is not cached on this host", 409, "image_missing")
            _capacity, available = self.space()
            if size > available:
                raise VerbError(f"not enough space in pool {self.pool_name}: image needs {size} bytes, "
                                f"{available} free; free space on the host", 507, "no_space")
            return self._upload(name, sha256, size, chunks), True

    def _upload(self, name: str, sha256: str, size: int, chunks: Iterable[bytes]) -> str:
        try:
            # Base images are shared read-only by many VMs: world-readable so QEMU can open them.
            vol = self.pool.createXML(_volume_xml(name, size, "raw", mode="0644"), 0)
        except libvirt.libvirtError as exc:
            raise from_libvirt(exc, f"creating volume {name}") from exc
        digest = hashlib.sha256()
        try:
            written = self._stream_into(vol, size, chunks, digest)
        except libvirt.libvirtError as exc:
            raise from_libvirt(exc, f"writing image {name}") from exc
        except Exception as exc:
            raise VerbError(f"fetching image {sha256} failed: {exc}", 502, "fetch_failed") from exc
        if digest.hexdigest() != sha256 or written != size:
            vol.delete(0)
            raise VerbError(f"image checksum mismatch: wanted {sha256}, got {digest.hexdigest()} "
                            f"({written} of {size} bytes); the transfer was corrupted, retry", 502, "checksum")
        self.pool.refresh(0)
        log.info("cached image %s (%d bytes)", sha256, size)
        return vol.path()

    def read_volume(self, name: str) -> tuple[int, Iterator[bytes]]:
        """Return (size in bytes, chunks) of a volume's file, for an offline copy to another host."""
        vol = self.volume(name)
        if vol is None:
            raise VerbError(f"no volume {name} in pool {self.pool_name}", 404, "not_found")
        size = Path(vol.path()).stat().st_size
        stream = self.hv.conn.newStream(0)
        vol.download(stream, 0, size, 0)

        def chunks() -> Iterator[bytes]:
            try:
                while True:
                    data = stream.recv(CHUNK)
                    if not isinstance(data, bytes) or not data:
                        break
                    yield data
                stream.finish()
            except BaseException:
                _abort(stream)
                raise

        return size, chunks()

    def receive_volume(self, name: str, size: int, chunks: Iterable[bytes]) -> str:
        """Replace a volume by the bytes of another host's copy (offline migration); return its path."""
        old = self.volume(name)
        if old is not None:
            old.delete(0)
        _capacity, available = self.space()
        if size > available:
            raise VerbError(f"not enough space in pool {self.pool_name} for {name} ({size} bytes)", 507, "no_space")
        try:
            vol = self.pool.createXML(_volume_xml(name, size, "raw"), 0)
        except libvirt.libvirtError as exc:
            raise from_libvirt(exc, f"creating volume {name}") from exc
        try:
            written = self._stream_into(vol, size, chunks)
        except Exception as exc:
            raise VerbError(f"receiving {name} failed: {exc}", 502, "copy_failed") from exc
        if written != size:
            vol.delete(0)
            raise VerbError(f"received {written} of {size} bytes of {name}; retry", 502, "copy_failed")
        self.pool.refresh(0)  # libvirt probes the copied file's format (qcow2 with its backing image)
        return vol.path()

    def _stream_into(self, vol: libvirt.virStorageVol, size: int, chunks: Iterable[bytes],
                     digest: Any = None) -> int:
        """Upload chunks into a new volume through a libvirt stream; return bytes written.

        On any failure the stream is aborted and the volume deleted, so no partial file stays.
        """
        stream = self.hv.conn.newStream(0)
        written = 0
        try:
            vol.upload(stream, 0, size, 0)
            for chunk in chunks:
                if digest is not None:
                    digest.update(chunk)
                written += len(chunk)
                _send_all(stream, chunk)
            stream.finish()
        except BaseException:
            _abort(stream)
            vol.delete(0)
            raise
        return written

    def create_overlay(self, uuid: str, sha256: str, size_bytes: int) -> str:
        """Create (once) a VM's qcow2 root volume backed by a cached image; return its path."""
        root, _seed = vm_volume_names(uuid)
        existing = self.volume(root)
        if existing is not None:
            return existing.path()
        base = self.volume(base_name(sha256))
        if base is None:
            raise VerbError(f"image {sha256} is not cached on this host", 409, "image_missing")
        _t, base_capacity, _a = base.info()
        capacity = max(size_bytes, int(base_capacity))
        try:
            vol = self.pool.createXML(_volume_xml(root, capacity, "qcow2", backing=(base.path(), "qcow2")), 0)
        except libvirt.libvirtError as exc:
            raise from_libvirt(exc, f"creating root disk {root}") from exc
        return vol.path()

    def write_seed(self, uuid: str, data: bytes) -> str:
        """Write a VM's NoCloud seed into a raw volume (replacing an older one); return its path."""
        _root, name = vm_volume_names(uuid)
        old = self.volume(name)
        if old is not None:
            old.delete(0)
        try:
            vol = self.pool.createXML(_volume_xml(name, len(data), "raw"), 0)
            self._stream_into(vol, len(data), [data])
        except libvirt.libvirtError as exc:
            raise from_libvirt(exc, f"writing seed {name}") from exc
        return vol.path()

    def delete_vm_volumes(self, uuid: str) -> list[str]:
        """Delete a VM's root and seed volumes; return the names deleted."""
        deleted = []
        for name in vm_volume_names(uuid):
            vol = self.volume(name)
            if vol is not None:
                try:
                    vol.delete(0)
                except libvirt.libvirtError as exc:
                    raise from_libvirt(exc, f"deleting volume {name}") from exc
                deleted.append(name)
        return deleted


def _send_all(stream: libvirt.virStream, data: bytes) -> None:
    """Send a whole buffer on a blocking stream (send may take less than it is given)."""
    view = memoryview(data)
    while view:
        sent = stream.send(bytes(view[:CHUNK]))
        if sent <= 0:
            raise VerbError("libvirt stream refused data", 500, "stream")
        view = view[sent:]


def _abort(stream: libvirt.virStream) -> None:
    try:
        stream.abort()
    except libvirt.libvirtError:
        pass
