"""Test doubles for the labcloud CLI's unit tests: a TLS server and the XML/console API contract.

`serve_tls` runs any WSGI app over HTTPS with a certificate from the project's own CA, as
`labcloud-controller serve` does. `contract_app` is a tiny Flask app answering the domain-XML and
console endpoints exactly as /work/wt/briefs/contracts.md describes them, so the CLI's edit,
dumpxml and console verbs can be tested before (and independently of) the real endpoints.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cheroot import wsgi
from flask import Flask, jsonify, request
from lxml import etree

from controller.pki import CertificateAuthority
from controller.tls import tls_adapter

TOKEN = "lct_double-token"
XML = """<domain type='qemu'>
  <name>vm1</name>
  <uuid>5e2d3c8a-1111-4a6b-9a49-0a0b0c0d0e0f</uuid>
  <memory unit='KiB'>524288</memory>
  <currentMemory unit='KiB'>524288</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
  </os>
</domain>
"""


@contextmanager
def serve_tls(app: Callable[..., Any], ca: CertificateAuthority, pki_dir: Path) -> Iterator[str]:
    """Serve a WSGI app on https://127.0.0.1:<free port> with a certificate of ca; yield the URL."""
    cert, key = ca.ensure_pair(pki_dir, "server", "127.0.0.1", ["127.0.0.1"], server=True, client=False)
    server = wsgi.Server(("127.0.0.1", 0), app, numthreads=4, server_name="labcli-test")
    server.ssl_adapter = tls_adapter(str(cert), str(key))
    server.prepare()
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.bind_addr[1]}"
    finally:
        server.stop()
        thread.join(10)


def _error(status: int, code: str, message: str, line: int | None = None, element: str | None = None) -> Any:
    err = {"code": code, "message": message, "request_id": "req-double"}
    if status == 422:
        err.update(line=line, element=element)
    return jsonify({"error": err}), status


def contract_app(ca_pem: bytes) -> tuple[Flask, dict[str, Any]]:
    """Return the double app and its state: {'xml', 'version', 'puts', 'running'} of the one VM 'vm1'."""
    state: dict[str, Any] = {"xml": XML, "version": 1, "puts": [], "running": True}
    app = Flask("labcli-double")

    @app.before_request
    def authenticate() -> Any:
        if request.path.startswith("/api/v1/pki/"):
            return None
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _error(401, "unauthorized", "a valid token is needed")
        return None

    @app.get("/api/v1/pki/ca.pem")
    def ca() -> Any:
        return ca_pem, 200, {"Content-Type": "application/x-pem-file"}

    @app.get("/api/v1/vms/<ref>/xml")
    def get_xml(ref: str) -> Any:
        if ref != "vm1":
            return _error(404, "not_found", f"no VM {ref!r}")
        return jsonify({"xml": state["xml"], "version": state["version"]})

    @app.put("/api/v1/vms/<ref>/xml")
    def put_xml(ref: str) -> Any:
        if ref != "vm1":
            return _error(404, "not_found", f"no VM {ref!r}")
        data = request.get_json()
        state["puts"].append(data)
        new = data["xml"]
        try:
            doc = etree.fromstring(new.encode(), etree.XMLParser(resolve_entities=False, no_network=True))
        except etree.XMLSyntaxError as exc:
            return _error(422, "invalid_xml", f"the XML is malformed: {exc.msg}", exc.lineno)
        if doc.findtext("name") != "vm1":
            return _error(422, "invalid_xml", "the <name> cannot change", element="name")
        diff = "".join(difflib.unified_diff(state["xml"].splitlines(True), new.splitlines(True), "old", "new"))
        changed = new != state["xml"]
        if changed and not data.get("dry_run"):
            state["xml"], state["version"] = new, state["version"] + 1
        return jsonify({"vm": {"name": "vm1"}, "version": state["version"], "changed": changed, "diff": diff,
                        "next_boot": state["running"] and not data.get("restart"),
                        "restarted": bool(data.get("restart"))})

    @app.post("/api/v1/vms/<ref>/console")
    def console(ref: str) -> Any:
        if ref != "vm1":
            return _error(404, "not_found", f"no VM {ref!r}")
        if not state["running"]:
            return _error(409, "conflict", "the VM is not running; start it first")
        return jsonify({"console": {"url": "wss://127.0.0.1:8470/console/ws/tok123",
                                    "page": "https://127.0.0.1:8470/vms/vm1-id/console",
                                    "expires_at": "2026-11-21T22:10:02+00:00", "password": None}})

    @app.post("/api/v1/vms/<ref>/migrate")
    def migrate(ref: str) -> Any:
        state["polls"] = 0
        return jsonify({"task": _task("pending", 0, "queued")}), 202

    @app.get("/api/v1/tasks/<task_id>")
    def task(task_id: str) -> Any:
        state["polls"] += 1
        if state["polls"] < 3:
            return jsonify({"task": _task("running", 40 * state["polls"], "copying memory")})
        return jsonify({"task": _task("succeeded", 100, "done", {"vm_id": "x", "from": "h1", "to": "h2"})})

    return app, state


def _task(state: str, progress: int, message: str, result: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "t1", "kind": "vm.migrate", "state": state, "progress": progress, "message": message,
            "error": None, "result": result, "request_id": "req-double", "vm_name": "vm1"}
