"""The agent's VNC relay: a websocket (mutual TLS, controller only) spliced to a VM's loopback VNC port.

QEMU's VNC server listens on 127.0.0.1 of this host only (see domainxml). The controller's
console proxy, which checked the user's token, opens wss://AGENT:CONSOLE_PORT/v1/vms/UUID/vnc
with its client certificate; this relay finds the display's port in the domain's live XML
and copies bytes between the websocket and that TCP port.
"""

from __future__ import annotations

import http
import logging
import re
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

import libvirt
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection, serve

from controller.tls import CONTROLLER_CLIENT_CN
from controller.wsservice import WebsocketService
from hostagent import domainxml
from hostagent.hypervisor import Hypervisor

log = logging.getLogger(__name__)
PATH_RE = re.compile(r"^/v1/vms/([0-9a-fA-F-]{36})/vnc$")
CHUNK = 64 * 1024

# Returns the loopback VNC port of a running domain by UUID, or None.
PortFinder = Callable[[str], int | None]


def live_vnc_port(hv: Hypervisor) -> PortFinder:
    """Return a finder that reads the VNC port from the live XML of a running domain."""

    def find(uuid: str) -> int | None:
        dom = hv.domain(uuid)
        try:
            if dom is None or not dom.isActive():
                return None
            return domainxml.vnc_port(dom.XMLDesc(0))
        except libvirt.libvirtError:  # the domain went away meanwhile
            return None

    return find


def common_name(peer: dict[str, Any] | None) -> str | None:
    """Return the CN of a peer certificate as ssl.getpeercert() describes it."""
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class VncRelay(WebsocketService):
    """The console port of the agent."""

    def __init__(self, find_port: PortFinder, host: str, port: int, tls: ssl.SSLContext) -> None:
        self.find_port = find_port
        self.server = serve(self._splice, host, port, ssl=tls, process_request=self._check,
                            compression=None, max_size=None)

    def _check(self, conn: ServerConnection, request: Request) -> Response | None:
        """Only the controller may open a relay, and only to a running domain with a loopback VNC display."""
        sock = conn.socket
        cn = common_name(sock.getpeercert()) if isinstance(sock, ssl.SSLSocket) else None
        if cn != CONTROLLER_CLIENT_CN:
            log.warning("console relay refused to %s: not the controller", cn or "a client without certificate")
            return conn.respond(http.HTTPStatus.FORBIDDEN, "only the controller may open consoles\n")
        match = PATH_RE.match(request.path)
        if not match:
            return conn.respond(http.HTTPStatus.NOT_FOUND, "no such console\n")
        port = self.find_port(match.group(1).lower())
        if port is None:
            return conn.respond(http.HTTPStatus.CONFLICT, "the domain is not running or has no loopback VNC display\n")
        conn.vnc_port = port  # type: ignore[attr-defined]
        return None

    def _splice(self, conn: ServerConnection) -> None:
        port: int = conn.vnc_port  # type: ignore[attr-defined]
        try:
            vnc = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError as exc:
            log.warning("console relay: VNC port %d: %s", port, exc)
            conn.close(1011, "the VM's display did not answer")
            return
        vnc.settimeout(None)
        log.info("console relay opened to 127.0.0.1:%d", port)

        def down() -> None:  # VNC -> websocket
            try:
                while data := vnc.recv(CHUNK):
                    conn.send(data)
            except (OSError, ConnectionClosed):
                pass
            finally:
                conn.close()

        reader = threading.Thread(target=down, name="vnc-down", daemon=True)
        reader.start()
        try:
            for message in conn:  # websocket -> VNC
                vnc.sendall(message if isinstance(message, bytes) else message.encode())
        except (OSError, ConnectionClosed):
            pass
        finally:
            try:
                vnc.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            vnc.close()
            reader.join(timeout=15)
        log.info("console relay to 127.0.0.1:%d closed", port)
