"""The controller's side of the agent channel: HTTPS with mutual TLS, fixed verbs."""

from __future__ import annotations

import json
import logging
import ssl
import threading
from pathlib import Path
from typing import Any

import requests
from websockets.sync.client import ClientConnection, connect

from controller import reqid

log = logging.getLogger(__name__)
AGENT_CONSOLE_PORT = 8474  # the agent's default; each agent reports its own in its facts


class AgentError(Exception):
    """An agent refused or could not do a verb; message is for the operator."""

    def __init__(self, host: str, message: str, status: int = 0, code: str = "agent_error") -> None:
        super().__init__(f"host {host}: {message}")
        self.host, self.status, self.code, self.detail = host, status, code, message


class AgentClient:
    """Calls the verbs of one host's agent."""

    def __init__(self, host: dict[str, Any], session: requests.Session) -> None:
        self.name = host["name"]
        self.base = f"https://{host['address']}:{host['agent_port']}/v1"
        self.session = session

    def call(self, method: str, path: str, body: Any = None, timeout: float = 60.0) -> dict[str, Any]:
        """Call one verb; raise AgentError with the agent's message on failure."""
        try:
            headers = {reqid.HEADER: reqid.get()}
            if reqid.operation():
                headers[reqid.OPERATION_HEADER] = reqid.operation()
            resp = self.session.request(method, self.base + path, json=body, timeout=timeout, headers=headers)
        except requests.ConnectionError as exc:
            raise AgentError(self.name, f"agent unreachable ({exc.__class__.__name__}); is it running?") from exc
        except requests.Timeout as exc:
            raise AgentError(self.name, f"agent did not answer within {timeout:.0f} s") from exc
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if resp.status_code >= 400:
            err = data.get("error", {}) if isinstance(data, dict) else {}
            raise AgentError(
                self.name, err.get("message") or f"HTTP {resp.status_code}", resp.status_code, err.get("code", "")
            )
        return data if isinstance(data, dict) else {}

    # The verbs, one method each.
    def facts(self) -> dict[str, Any]:
        """Return host facts."""
        return self.call("GET", "/facts")

    def ensure_image(self, sha256: str, size: int, url: str) -> dict[str, Any]:
        """Make sure the base image is cached in the host's pool (fetches it when not)."""
        return self.call("POST", "/images/ensure", {"sha256": sha256, "size": size, "url": url}, timeout=900)

    def create_vm(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Create disks and seed, define and start a VM (idempotent by UUID)."""
        return self.call("POST", "/vms", spec, timeout=300)

    def vm(self, uuid: str) -> dict[str, Any]:
        """Return a domain's state and XML."""
        return self.call("GET", f"/vms/{uuid}")

    def vm_action(self, uuid: str, action: str) -> dict[str, Any]:
        """Run start, shutdown, poweroff or reboot."""
        return self.call("POST", f"/vms/{uuid}/{action}")

    def destroy_vm(self, uuid: str) -> dict[str, Any]:
        """Force off, undefine and delete the disks of a VM (idempotent)."""
        return self.call("DELETE", f"/vms/{uuid}", timeout=120)

    def ensure_image_in(self, storage: str, sha256: str, size: int, url: str) -> dict[str, Any]:
        """Make sure the base image is cached in the host's local or shared pool."""
        body = {"sha256": sha256, "size": size, "url": url, "storage": storage}
        return self.call("POST", "/images/ensure", body, timeout=900)

    def seed(self, uuid: str, storage: str) -> str:
        """Return a VM's seed volume, base64-encoded."""
        return str(self.call("GET", f"/vms/{uuid}/seed?storage={storage}").get("seed", ""))

    def prepare_incoming(self, uuid: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Destination: check bridges, cache the image, pre-create the VM's volumes."""
        return self.call("POST", f"/vms/{uuid}/incoming", spec, timeout=900)

    def abort_incoming(self, uuid: str, storage: str) -> dict[str, Any]:
        """Destination: remove what a failed incoming migration left (never a running domain)."""
        return self.call("DELETE", f"/vms/{uuid}/incoming?storage={storage}")

    def start_migration(self, uuid: str, spec: dict[str, Any]) -> dict[str, Any]:
        """Source: start libvirt's peer-to-peer migration in the background."""
        return self.call("POST", f"/vms/{uuid}/migration", spec)

    def migration(self, uuid: str) -> dict[str, Any]:
        """Source: state and statistics of the migration."""
        return self.call("GET", f"/vms/{uuid}/migration")

    def cancel_migration(self, uuid: str) -> dict[str, Any]:
        """Source: abort the running migration."""
        return self.call("POST", f"/vms/{uuid}/migration/cancel")

    def cleanup_source(self, uuid: str) -> dict[str, Any]:
        """Source: delete the local volumes of a VM that migrated away."""
        return self.call("POST", f"/vms/{uuid}/cleanup-source")

    def define(self, xml: str) -> dict[str, Any]:
        """Define (not start) a domain from XML."""
        return self.call("POST", "/domains", {"xml": xml})

    def undefine(self, uuid: str, delete_volumes: bool) -> dict[str, Any]:
        """Undefine a stopped domain, optionally deleting its local volumes."""
        return self.call("POST", f"/vms/{uuid}/undefine", {"delete_volumes": delete_volumes})

    def read_volume(self, name: str) -> requests.Response:
        """Open a streaming download of a volume."""
        resp = self.session.get(f"{self.base}/volumes/{name}", stream=True, timeout=60,
                                headers={reqid.HEADER: reqid.get()})
        if resp.status_code != 200:
            raise AgentError(self.name, f"reading volume {name}: HTTP {resp.status_code}", resp.status_code)
        return resp

    def write_volume(self, name: str, size: int, chunks: Any) -> dict[str, Any]:
        """Upload a volume's bytes (replacing it)."""
        try:
            resp = self.session.put(f"{self.base}/volumes/{name}", data=chunks, timeout=3600,
                                    headers={reqid.HEADER: reqid.get(), "X-Volume-Size": str(size)})
        except requests.RequestException as exc:
            raise AgentError(self.name, f"writing volume {name}: {exc}") from exc
        if resp.status_code >= 400:
            raise AgentError(self.name, resp.json().get("error", {}).get("message", f"HTTP {resp.status_code}"),
                             resp.status_code)
        return dict(resp.json())

    def domain_xml(self, uuid: str) -> dict[str, Any]:
        """Return libvirt's inactive, secure XML of a domain and its state."""
        return self.call("GET", f"/vms/{uuid}/xml")

    def define_xml(self, uuid: str, xml: str, restart: bool) -> dict[str, Any]:
        """Replace a domain's persistent XML (libvirt validates it); restart it when asked."""
        return self.call("PUT", f"/vms/{uuid}/xml", {"xml": xml, "restart": restart}, timeout=120)

    def renetwork(self, uuid: str, nics: list[dict[str, Any]], hostname: str) -> dict[str, Any]:
        """Give a stopped VM new addresses: new seed (new instance-id) or files in its disk, and new filters."""
        return self.call("POST", f"/vms/{uuid}/network", {"nics": nics, "hostname": hostname}, timeout=120)

    def inspect_domain(self, uuid: str) -> dict[str, Any]:
        """Describe a domain for adoption: size, disks, NICs, guest addresses, problems."""
        return self.call("GET", f"/domains/{uuid}/inspect", timeout=30)

    def adopt_domain(self, uuid: str, vm_id: str, owner: str) -> dict[str, Any]:
        """Rename the domain's disk to labcloud's layout and write labcloud's metadata (idempotent)."""
        return self.call("POST", f"/domains/{uuid}/adopt", {"vm_id": vm_id, "owner": owner}, timeout=120)

    def guest_info(self, uuid: str) -> dict[str, Any]:
        """Ask qemu-guest-agent for hostname and addresses."""
        return self.call("GET", f"/vms/{uuid}/guest", timeout=30)


class AgentPool:
    """Hands out clients that share one TLS session per host."""

    def __init__(self, ca: Path, cert: Path, key: Path) -> None:
        self.ca, self.cert, self.key = ca, cert, key
        self._sessions: dict[str, requests.Session] = {}
        self._lock = threading.Lock()

    def client(self, host: dict[str, Any]) -> AgentClient:
        """Return a client for a host row."""
        with self._lock:
            session = self._sessions.get(host["id"])
            if session is None:
                session = requests.Session()
                # Trust only labcloud's CA: requests lets REQUESTS_CA_BUNDLE override session.verify.
                session.trust_env = False
                session.verify = str(self.ca)
                session.cert = (str(self.cert), str(self.key))
                self._sessions[host["id"]] = session
        return AgentClient(host, session)

    def console(self, host: dict[str, Any], uuid: str, timeout: float = 10.0) -> ClientConnection:
        """Open a VM's VNC relay on its host's agent: a websocket over mutual TLS (raises OSError on failure)."""
        try:
            port = int(json.loads(host.get("facts") or "{}").get("console_port") or AGENT_CONSOLE_PORT)
        except (ValueError, TypeError):
            port = AGENT_CONSOLE_PORT
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return connect(f"wss://{host['address']}:{port}/v1/vms/{uuid}/vnc", ssl=ctx, open_timeout=timeout,
                       compression=None, max_size=None, additional_headers={reqid.HEADER: reqid.get()})
