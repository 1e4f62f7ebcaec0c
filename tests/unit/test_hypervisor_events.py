"""The agent hears libvirt lifecycle events (test:///default emits them too)."""

from __future__ import annotations

import threading
import time
import uuid

import libvirt

from hostagent.hypervisor import Hypervisor, start_event_loop

XML = """<domain type='test'><name>ev-{n}</name><uuid>{u}</uuid><memory>65536</memory>
<os><type>hvm</type></os></domain>"""


def test_lifecycle_events_reach_listeners() -> None:
    start_event_loop()
    hv = Hypervisor("test:///default")
    seen: list[tuple[str, int]] = []
    got = threading.Event()

    def listener(dom_uuid: str, event: int) -> None:
        seen.append((dom_uuid, event))
        got.set()

    hv.on_lifecycle(listener)
    dom_uuid = str(uuid.uuid4())
    dom = hv.conn.defineXML(XML.format(n=dom_uuid[:8], u=dom_uuid))
    try:
        dom.create()
        deadline = time.monotonic() + 5
        while (dom_uuid, libvirt.VIR_DOMAIN_EVENT_STARTED) not in seen and time.monotonic() < deadline:
            got.wait(0.1)
        assert (dom_uuid, libvirt.VIR_DOMAIN_EVENT_STARTED) in seen, seen
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
        hv.close()
