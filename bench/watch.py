"""When libvirt reports a domain running: lifecycle events from each lab host's libvirtd.

Both sides of a create pair are timed to the same mark, libvirt's STARTED event for
the domain, heard on a connection to the host's libvirtd (its unix socket), so
neither side is favoured by how often it is polled.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import libvirt

from hostagent.hypervisor import start_event_loop


class StartWatch:
    """Records the monotonic time of each domain's STARTED event, by domain name."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}
        self._cond = threading.Condition()
        self._callbacks: list[tuple[libvirt.virConnect, int]] = []

    def attach(self, conn: libvirt.virConnect) -> None:
        """Listen to lifecycle events on one host's connection."""
        start_event_loop()
        cb_id = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None)
        self._callbacks.append((conn, cb_id))

    def _on_event(self, _conn: libvirt.virConnect, dom: libvirt.virDomain, event: int, _detail: int,
                  _opaque: Any) -> None:
        if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
            at = time.monotonic()
            with self._cond:
                self._started.setdefault(dom.name(), at)
                self._cond.notify_all()

    def wait(self, names: list[str], timeout: float) -> dict[str, float]:
        """Wait until every name has started or timeout passes; return those that did."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                seen = {n: self._started[n] for n in names if n in self._started}
                left = deadline - time.monotonic()
                if len(seen) == len(names) or left <= 0:
                    return seen
                self._cond.wait(min(left, 1.0))

    def close(self) -> None:
        """Deregister the callbacks (connections are closed by their owner)."""
        for conn, cb_id in self._callbacks:
            try:
                conn.domainEventDeregisterAny(cb_id)
            except libvirt.libvirtError:
                pass
        self._callbacks.clear()
