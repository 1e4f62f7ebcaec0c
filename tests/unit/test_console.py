"""The console: tokens from the API, the controller's websocket proxy and the agent's VNC relay, for real.

Both servers run on 127.0.0.1 with certificates from the controller's CA; a small TCP server plays
QEMU's VNC display (it greets like RFB and echoes), so the whole path browser → proxy → agent → VNC
is exercised without a VM.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from controller.console import ConsoleProxy, flask_session_reader
from controller.core import Core
from controller.tls import CONTROLLER_CLIENT_CN, server_tls
from hostagent import domainxml
from hostagent.console import VncRelay
from tests.conftest import Inventory, assert_error

GREETING = b"RFB 003.008\n"


class FakeVnc:
    """A TCP server on 127.0.0.1 that greets like a VNC server and echoes what it receives."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            conn.sendall(GREETING)
            while data := conn.recv(4096):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def setup(app: Flask, core: Core, inv: Inventory, member: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A running VM of the member on a host whose agent relay and fake VNC display are up, and the proxy."""
    vnc = FakeVnc()
    pki = core.config.pki_dir
    host_cert, host_key = core.ca.ensure_pair(tmp_path, "host", "labcloud-host:test", ["127.0.0.1"],
                                              server=True, client=True)
    vms: dict[str, int] = {}
    relay = VncRelay(lambda uuid: vms.get(uuid), "127.0.0.1", 0,
                     server_tls(str(host_cert), str(host_key), client_ca=str(pki / "ca.pem")))
    host = inv.host("h1", facts=json.dumps({"console_port": relay.port}))
    vm = inv.vm("vm1", member["id"], host)
    vms[vm["id"]] = vnc.port
    cert, key = core.ca.ensure_pair(pki, "server", "127.0.0.1", ["127.0.0.1"], server=True, client=False)
    proxy = ConsoleProxy(core, flask_session_reader(app), "127.0.0.1", 0, server_tls(str(cert), str(key)),
                         origins=["https://127.0.0.1:8470"])
    core.config.console_port = proxy.port
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (relay, proxy)]
    for t in threads:
        t.start()
    yield {"vm": vm, "host": host, "proxy": proxy, "relay": relay, "host_cert": (host_cert, host_key)}
    proxy.shutdown()
    relay.shutdown()
    vnc.close()
    for t in threads:
        t.join(timeout=5)


def client_tls(core: Core, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    """Trust the controller's CA (and present a certificate when given)."""
    ctx = ssl.create_default_context(cafile=str(core.config.pki_dir / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def issue(client: FlaskClient, vm: str, headers: dict[str, str]) -> dict[str, Any]:
    """Ask the API for a console session."""
    resp = client.post(f"/api/v1/vms/{vm}/console", headers=headers)
    assert resp.status_code == 200, resp.get_json()
    return dict(resp.get_json()["console"])


def open_ws(core: Core, url: str, headers: dict[str, str] | None = None) -> ClientConnection:
    """Connect to the proxy like the CLI would."""
    return connect(url, ssl=client_tls(core), additional_headers=headers or {}, open_timeout=10)


def refused(core: Core, url: str, headers: dict[str, str] | None = None) -> int:
    """Return the HTTP status the proxy refused a handshake with."""
    with pytest.raises(InvalidStatus) as info:
        open_ws(core, url, headers).close()
    return int(info.value.response.status_code)


def test_console_session_relays_the_vnc_display(client: FlaskClient, core: Core, setup: dict[str, Any],
                                                member: dict[str, Any]) -> None:
    info = issue(client, "vm1", member["headers"])
    assert info["url"].startswith(f"wss://127.0.0.1:{setup['proxy'].port}/console/")
    assert info["page"].endswith(f"/vms/{setup['vm']['id']}/console")
    assert info["password"] is None and info["expires_at"]
    with open_ws(core, info["url"], member["headers"]) as ws:
        assert ws.recv(timeout=10) == GREETING
        ws.send(b"\x01\x02hello")
        assert ws.recv(timeout=10) == b"\x01\x02hello"


def test_console_works_with_the_ui_session_cookie(app: Flask, client: FlaskClient, core: Core,
                                                  setup: dict[str, Any], member: dict[str, Any]) -> None:
    with client.session_transaction() as session:
        session["user_id"] = member["id"]
    cookie = client.get_cookie("session")
    assert cookie is not None
    token_url = issue(client, "vm1", member["headers"])["url"]
    with open_ws(core, token_url, {"Cookie": f"session={cookie.value}",
                                   "Origin": "https://127.0.0.1:8470"}) as ws:
        assert ws.recv(timeout=10) == GREETING


def test_reused_console_url_is_refused(client: FlaskClient, core: Core, setup: dict[str, Any],
                                       member: dict[str, Any]) -> None:
    url = issue(client, "vm1", member["headers"])["url"]
    with open_ws(core, url, member["headers"]) as ws:
        assert ws.recv(timeout=10) == GREETING
    assert refused(core, url, member["headers"]) == 403


def test_expired_console_url_is_refused(client: FlaskClient, core: Core, setup: dict[str, Any],
                                        member: dict[str, Any]) -> None:
    core.consoles.ttl_s = 0.3
    url = issue(client, "vm1", member["headers"])["url"]
    time.sleep(0.5)
    assert refused(core, url, member["headers"]) == 403


def test_console_url_of_another_user_is_refused(app: Flask, client: FlaskClient, core: Core, setup: dict[str, Any],
                                                member: dict[str, Any], other_member: dict[str, Any]) -> None:
    url = issue(client, "vm1", member["headers"])["url"]
    assert refused(core, url, other_member["headers"]) == 403
    # Spent by the refused attempt: the rightful user needs a new one.
    assert refused(core, url, member["headers"]) == 403
    url = issue(client, "vm1", member["headers"])["url"]
    with client.session_transaction() as session:
        session["user_id"] = other_member["id"]
    cookie = client.get_cookie("session")
    assert cookie is not None
    assert refused(core, url, {"Cookie": f"session={cookie.value}"}) == 403


def test_console_without_token_or_credentials_is_refused(client: FlaskClient, core: Core, setup: dict[str, Any],
                                                         member: dict[str, Any]) -> None:
    base = f"wss://127.0.0.1:{setup['proxy'].port}"
    assert refused(core, base + "/console/", member["headers"]) == 401
    assert refused(core, base + "/", member["headers"]) == 401
    assert refused(core, base + "/console/not-a-token", member["headers"]) == 403
    url = issue(client, "vm1", member["headers"])["url"]
    assert refused(core, url) == 403  # the token alone, without the user's credentials
    url = issue(client, "vm1", member["headers"])["url"]
    assert refused(core, url, {"Cookie": "session=forged.value.here"}) == 403


def test_console_from_a_foreign_origin_is_refused(client: FlaskClient, core: Core, setup: dict[str, Any],
                                                  member: dict[str, Any]) -> None:
    url = issue(client, "vm1", member["headers"])["url"]
    assert refused(core, url, {**member["headers"], "Origin": "https://evil.example"}) == 403


def test_console_api_refuses_stopped_and_foreign_vms(client: FlaskClient, core: Core, inv: Inventory,
                                                     setup: dict[str, Any], member: dict[str, Any],
                                                     other_member: dict[str, Any], auth: dict[str, str]) -> None:
    inv.vm("vm2", member["id"], setup["host"], state="shutoff")
    assert_error(client.post("/api/v1/vms/vm2/console", headers=member["headers"]), 409, "conflict")
    assert_error(client.post("/api/v1/vms/vm1/console", headers=other_member["headers"]), 404)
    assert_error(client.post("/api/v1/vms/vm1/console"), 401)
    assert client.post("/api/v1/vms/vm1/console", headers=auth).status_code == 200  # admins see every VM
    assert "wss://127.0.0.1:" in client.get("/login").headers["Content-Security-Policy"]


def test_agent_relay_only_serves_the_controller(core: Core, setup: dict[str, Any]) -> None:
    url = f"wss://127.0.0.1:{setup['relay'].port}/v1/vms/{setup['vm']['id']}/vnc"
    with pytest.raises(InvalidStatus) as info:  # a host's certificate is not the controller's
        connect(url, ssl=client_tls(core, setup["host_cert"]), open_timeout=10).close()
    assert info.value.response.status_code == 403
    pki = core.config.pki_dir
    controller_cert = (pki / "client.pem", pki / "client.key")
    with connect(url, ssl=client_tls(core, controller_cert), open_timeout=10) as ws:
        assert ws.recv(timeout=10) == GREETING
    with pytest.raises(InvalidStatus) as info:
        connect(url.replace(setup["vm"]["id"], "00000000-0000-0000-0000-000000000000"),
                ssl=client_tls(core, controller_cert), open_timeout=10).close()
    assert info.value.response.status_code == 409
    with pytest.raises((OSError, ConnectionClosed, InvalidHandshake)):  # no certificate: TLS refuses it
        with connect(url, ssl=client_tls(core), open_timeout=10) as ws:
            ws.recv(timeout=5)
    assert CONTROLLER_CLIENT_CN == "labcloud-controller"


def test_vnc_port_is_read_from_loopback_graphics_only() -> None:
    running = ("<domain><devices><graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1'>"
               "<listen type='address' address='127.0.0.1'/></graphics></devices></domain>")
    assert domainxml.vnc_port(running) == 5901
    assert domainxml.vnc_port(running.replace("127.0.0.1", "0.0.0.0")) is None  # noqa: S104
    assert domainxml.vnc_port(running.replace("port='5901'", "port='-1'")) is None
    assert domainxml.vnc_port("<domain><devices/></domain>") is None
