"""Domain XML verbs: read libvirt's inactive definition, define an edited one, restart to apply it."""

from __future__ import annotations

import logging
import time
from typing import Any

import libvirt

from hostagent import domainxml
from hostagent.errors import VerbError, from_libvirt
from hostagent.hypervisor import Hypervisor
from hostagent.vms import state_of

log = logging.getLogger(__name__)
XML_FLAGS = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
SHUTDOWN_WAIT_S = 30.0


class XmlEdit:
    """Reads and replaces the persistent definition of labcloud's domains on this host."""

    def __init__(self, hv: Hypervisor, shutdown_wait_s: float = SHUTDOWN_WAIT_S) -> None:
        self.hv, self.shutdown_wait_s = hv, shutdown_wait_s

    def get(self, uuid: str) -> dict[str, Any]:
        """Return libvirt's inactive, secure definition and the domain's state."""
        dom = self.hv.require(uuid)
        return {"uuid": uuid, "xml": dom.XMLDesc(XML_FLAGS), "state": state_of(dom)}

    def define(self, uuid: str, xml: str, restart: bool) -> dict[str, Any]:
        """Define new XML for this domain with libvirt's validation; restart it when asked and running."""
        dom = self.hv.require(uuid)
        try:
            root = domainxml.parse_xml(xml)
        except ValueError as exc:
            raise VerbError(str(exc), 422, "invalid_xml") from exc
        if (root.findtext("uuid") or "").strip().lower() != uuid.lower():
            raise VerbError(f"the XML is not domain {uuid}'s definition (its <uuid> differs)", 422, "invalid_xml")
        try:
            dom = self.hv.conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        except libvirt.libvirtError as exc:
            # libvirt's own words are what the operator needs, unprefixed.
            raise VerbError(exc.get_error_message() or str(exc), 422, "libvirt_rejected") from exc
        log.info("defined new XML for domain %s (%s)", dom.name(), uuid)
        restarted, restart_error = False, None
        if restart and dom.isActive():
            try:
                self._restart(dom)
                restarted = True
            except VerbError as exc:  # the new definition stands; say why it is not running yet
                log.warning("%s", exc.message)
                restart_error = exc.message
        return {"uuid": uuid, "xml": dom.XMLDesc(XML_FLAGS), "state": state_of(dom), "restarted": restarted,
                "restart_error": restart_error}

    def _restart(self, dom: libvirt.virDomain) -> None:
        """Power-cycle the domain so the new definition applies: ACPI first, then force."""
        try:
            dom.shutdown()  # the hypervisor's default: ACPI power button for QEMU
            deadline = time.monotonic() + self.shutdown_wait_s
            while dom.isActive() and time.monotonic() < deadline:
                time.sleep(0.5)
            if dom.isActive():
                log.warning("domain %s did not shut down within %.0f s; forcing it off", dom.name(),
                            self.shutdown_wait_s)
                dom.destroy()
            dom.create()
        except libvirt.libvirtError as exc:
            raise from_libvirt(exc, f"restarting {dom.name()} to apply its new XML") from exc
        log.info("restarted domain %s with its new definition", dom.name())
