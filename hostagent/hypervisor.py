"""The one owner of the agent's libvirt connection.

The event loop is registered before the connection opens (needed for keepalive
and, later, lifecycle events); a dead connection is reopened on next use.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import libvirt

from hostagent.errors import VerbError, from_libvirt

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
        self._lifecycle_listeners: list[Callable[[str, int], None]] = []

    def on_lifecycle(self, listener: Callable[[str, int], None]) -> None:
        """Call listener(domain_uuid, event) on every domain lifecycle event (needs start_event_loop)."""
        self._lifecycle_listeners.append(listener)
        with self._lock:
            if self._conn is not None:
                self._register_events(self._conn)

    def _register_events(self, conn: libvirt.virConnect) -> None:
        def dispatch(_conn: object, dom: libvirt.virDomain, event: int, _detail: int, _opaque: object) -> None:
            for listener in self._lifecycle_listeners:
                try:
                    listener(dom.UUIDString(), event)
                except Exception:
                    log.exception("lifecycle listener failed")

        if self._lifecycle_listeners and _loop_started:
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, dispatch, None)

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
            self._register_events(conn)  # a new connection has no callbacks yet
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

    def require(self, uuid: str) -> libvirt.virDomain:
        """Return the domain with this UUID, or refuse the verb with 404."""
        dom = self.domain(uuid)
        if dom is None:
            raise VerbError(f"no domain {uuid} on this host", 404, "not_found")
        return dom

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except libvirt.libvirtError:
                    pass
                self._conn = None
