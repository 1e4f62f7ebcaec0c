"""A real agent app on libvirt's test:///default driver, wired behind the controller's agent client.

The controller under test calls the agent's verbs over the same AgentClient it uses in
production; only the transport is Flask's test client instead of HTTPS. Domains are
defined with hostagent.domainxml, exactly as a create would, and removed afterwards
(test:///default is one state shared by the whole process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import libvirt
from flask.testing import FlaskClient

from controller.core import Core
from controller.tls import CONTROLLER_CLIENT_CN
from hostagent.app import Agent, create_agent_app
from hostagent.config import AgentConfig
from hostagent.domainxml import DomainSpec, NicSpec, build_domain
from hostagent.hypervisor import Hypervisor
from tests.conftest import Inventory

VNC_PASSWORD = "Vnc4pass"


class _Response:
    def __init__(self, status_code: int, data: Any) -> None:
        self.status_code, self._data = status_code, data

    def json(self) -> Any:
        if self._data is None:
            raise ValueError("no JSON body")
        return self._data


class AgentAppSession:
    """Stands in for the requests.Session of one host: sends each verb to the agent app in-process."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def request(self, method: str, url: str, json: Any = None, timeout: float = 0,
                headers: dict[str, str] | None = None) -> _Response:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        resp = self.client.open(path, method=method, json=json, headers=headers or {},
                                environ_overrides={"SSL_CLIENT_S_DN_CN": CONTROLLER_CLIENT_CN})
        return _Response(resp.status_code, resp.get_json(silent=True))


class XmlHost:
    """One inventory host whose agent runs on test:///default; VMs get real (test) domains."""

    def __init__(self, core: Core, inv: Inventory, tmp: Path) -> None:
        self.core, self.inv = core, inv
        self.hv = Hypervisor("test:///default")
        self.host = inv.host("h1")
        self.flavor = inv.flavor("small", vcpus=2, memory_mib=1024)
        self.network = inv.network("lan")
        config = AgentConfig(controller_url="https://127.0.0.1:1", agent_channel_url="https://127.0.0.1:1/agent",
                             host_id=self.host["id"], name="h1", address="127.0.0.1", virt_type="qemu",
                             libvirt_uri="test:///default", config_dir=str(tmp / "agent"))
        agent = Agent(config, self.hv)
        agent.xml.shutdown_wait_s = 2.0
        self.agent = agent
        core.agents._sessions[self.host["id"]] = AgentAppSession(create_agent_app(agent).test_client())  # type: ignore[assignment]
        self.uuids: list[str] = []

    def vm(self, name: str, owner_id: int, *, running: bool = False) -> dict[str, Any]:
        """Create an inventory VM (1 vCPU, 512 MiB of flavor small) and define its domain."""
        row = self.inv.vm(name, owner_id, self.host, network=self.network)
        with self.core.db.write() as w:
            w.execute("UPDATE vms SET flavor_id = ? WHERE id = ?", [self.flavor["id"], row["id"]])
        nic = self.core.db.one("SELECT mac FROM vm_nics WHERE vm_id = ?", [row["id"]]) or {}
        xml = build_domain(DomainSpec(
            uuid=row["id"], name=name, vcpus=1, memory_mib=512,
            root_disk=f"/var/lib/libvirt/images/labcloud/{row['id']}-root.qcow2",
            seed_disk=f"/var/lib/libvirt/images/labcloud/{row['id']}-seed.iso",
            nics=[NicSpec(mac=nic["mac"], bridge="br0")], virt_type="qemu", vm_id=row["id"], owner="someone",
            vnc_password=VNC_PASSWORD,
        ))
        dom = self.hv.conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        self.uuids.append(row["id"])
        if running:
            dom.create()
        return self.core.db.one("SELECT * FROM vms WHERE id = ?", [row["id"]]) or {}

    def libvirt_xml(self, uuid: str) -> str:
        """Return what libvirt holds now (inactive, secure)."""
        dom = self.hv.conn.lookupByUUIDString(uuid)
        return str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE))

    def close(self) -> None:
        """Remove every domain this host defined."""
        for uuid in self.uuids:
            dom = self.hv.domain(uuid)
            if dom is not None:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
        self.hv.close()
