"""The one owner of the agent's libvirt connection.

The event loop is registered before the connection opens (needed for keepalive
and, later, lifecycle events); a dead connection is reopened on next use.
"""

from __future__ import annotations

import logging
import threading

import libvirt

from hostagent.errors import from_libvirt

log = logging.getLogger(__name__)
_loop_started = False
_loop_lock = threading.Lock()


def _ignore_libvirt_errors(_ctx: object, _err: object) -> None:
    """Keep libvirt from printing every error on stderr; errors are raised instead."""


def start_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once)."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        libvirt.registerErrorHandler(_ignore_libvirt_errors, None)

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


class Hypervisor:
    """Opens and keeps the connection to the local libvirt."""

    def __init__(self, uri: str = "qemu:///system") -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()

    @property
    def conn(self) -> libvirt.virConnect:
        """Return a live connection, reopening it when it died."""
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                log.warning("libvirt connection lost; reopening")
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise from_libvirt(exc, f"cannot connect to {self.uri} (is libvirtd running?)") from exc
            if not self.uri.startswith("test://"):
                conn.setKeepAlive(5, 3)
            self._conn = conn
            return conn

    def domain(self, uuid: str) -> libvirt.virDomain | None:
        """Return the domain with this UUID, or None."""
        try:
            return self.conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise from_libvirt(exc, f"looking up domain {uuid}") from exc

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except libvirt.libvirtError:
                    pass
                self._conn = None
