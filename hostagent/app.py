"""The agent's fixed verbs over HTTPS; only the controller's certificate may call them."""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterator
from typing import Any

import libvirt
import requests
from flask import Flask, Response, jsonify, request

from controller import reqid
from controller.tls import CONTROLLER_CLIENT_CN
from hostagent.adopt import Adoption
from hostagent.config import AgentConfig
from hostagent.errors import VerbError
from hostagent.hypervisor import Hypervisor
from hostagent.migration import Migrations
from hostagent.storage import CHUNK, Storage
from hostagent.vms import Vms
from hostagent.xmledit import XmlEdit

log = logging.getLogger(__name__)


class Agent:
    """Everything a verb needs: settings, libvirt, storage, VMs and the controller session."""

    def __init__(self, config: AgentConfig, hv: Hypervisor | None = None) -> None:
        self.config = config
        self.hv = hv or Hypervisor(config.libvirt_uri)
        self.storage = Storage(self.hv, config.pool_name, config.pool_path)
        self.storages = {"local": self.storage}
        if config.shared_pool_path:
            self.storages["shared"] = Storage(self.hv, config.pool_name + "-shared", config.shared_pool_path)
        self.vms = Vms(self.hv, self.storage, config.virt_type, self.storages, switch=config.switch,
                       pause_after_define_s=config.fault_create_pause_s)
        self.xml = XmlEdit(self.hv)
        self.migrations = Migrations(self.hv, self.storages, config.libvirt_pki_dir)
        self.adoption = Adoption(self.hv, self.storage)
        self.session = requests.Session()
        # Trust only labcloud's CA: requests lets REQUESTS_CA_BUNDLE override session.verify.
        self.session.trust_env = False
        self.session.verify = str(config.ca_path)
        self.session.cert = (str(config.cert_path), str(config.key_path))

    def facts(self) -> dict[str, Any]:
        """Return this host's capacity and versions."""
        conn = self.hv.conn
        _model, memory_mib, cpus, *_rest = conn.getInfo()
        capacity, available = self.storage.space()
        return {
            "host_id": self.config.host_id, "name": self.config.name, "vcpus": int(cpus),
            "memory_mib": int(memory_mib), "pool_capacity_bytes": capacity, "pool_free_bytes": available,
            "libvirt_version": _version(conn.getLibVersion()), "hypervisor_version": _version(conn.getVersion()),
            "virt_type": self.config.virt_type, "hostname": platform.node(),
            "shared_pool": bool(self.config.shared_pool_path), "shared_pool_unsafe": self.config.shared_pool_unsafe,
            "migration_tls": bool(self.config.libvirt_pki_dir), "switch": self.config.switch,
            "console_port": self.config.console_port,
        }

    def fetch(self, url: str) -> Iterator[bytes]:
        """Stream a file from the controller's agent channel (mutual TLS)."""
        if not url.startswith(self.config.agent_channel_url + "/"):
            raise VerbError("images are only fetched from the controller's agent channel", 400, "bad_url")
        resp = self.session.get(url, stream=True, timeout=60, headers={reqid.HEADER: reqid.get()})
        if resp.status_code != 200:
            raise VerbError(f"controller answered {resp.status_code} for {url}", 502, "fetch_failed")
        yield from resp.iter_content(CHUNK)


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def create_agent_app(agent: Agent) -> Flask:
    """Build the verb app."""
    app = Flask("labcloud-agent")

    @app.before_request
    def check_caller() -> Any:
        reqid.set(reqid.accept(request.headers.get(reqid.HEADER)))
        # cheroot verified the chain against our CA; only the controller's identity may call.
        if request.environ.get("SSL_CLIENT_S_DN_CN") != CONTROLLER_CLIENT_CN:
            log.warning("refused %s %s from %s: not the controller", request.method, request.path,
                        request.environ.get("SSL_CLIENT_S_DN_CN") or "a client without certificate")
            return jsonify({"error": {"code": "forbidden", "message": "only the controller may call the agent"}}), 403
        log.info("verb %s %s%s", request.method, request.path,
                 f" (operation {request.headers[reqid.OPERATION_HEADER]})"
                 if reqid.OPERATION_HEADER in request.headers else "")
        return None

    @app.errorhandler(VerbError)
    def verb_error(exc: VerbError) -> Any:
        log.warning("verb failed: %s", exc.message)
        return jsonify({"error": {"code": exc.code, "message": exc.message, "request_id": reqid.get()}}), exc.status

    @app.errorhandler(libvirt.libvirtError)
    def libvirt_error(exc: libvirt.libvirtError) -> Any:
        log.warning("libvirt: %s", exc)
        return jsonify({"error": {"code": "libvirt", "message": str(exc), "request_id": reqid.get()}}), 500

    def body() -> dict[str, Any]:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise VerbError("a JSON object body is required", 400, "bad_request")
        return data

    @app.get("/v1/facts")
    def facts() -> Any:
        return jsonify(agent.facts())

    @app.post("/v1/images/ensure")
    def ensure_image() -> Any:
        data = body()
        sha, size, url = str(data["sha256"]), int(data["size"]), str(data["url"])
        storage = agent.storages.get(str(data.get("storage", "local")))
        if storage is None:
            raise VerbError("this host has no shared storage pool; configure shared_pool_path", 409, "no_pool")
        path, fetched = storage.ensure_image(sha, size, agent.fetch(url))
        return jsonify({"path": path, "fetched": fetched})

    @app.get("/v1/vms")
    def list_vms() -> Any:
        return jsonify({"domains": agent.vms.list()})

    @app.post("/v1/vms")
    def create_vm() -> Any:
        return jsonify(agent.vms.create(body()))

    @app.get("/v1/vms/<uuid>")
    def get_vm(uuid: str) -> Any:
        return jsonify(agent.vms.get(uuid))

    @app.post("/v1/vms/<uuid>/<action>")
    def vm_action(uuid: str, action: str) -> Any:
        return jsonify(agent.vms.action(uuid, action))

    @app.delete("/v1/vms/<uuid>")
    def destroy_vm(uuid: str) -> Any:
        return jsonify(agent.vms.destroy(uuid))

    @app.post("/v1/vms/<uuid>/migration")
    def start_migration(uuid: str) -> Any:
        return jsonify(agent.migrations.start(uuid, body())), 202

    @app.get("/v1/vms/<uuid>/migration")
    def migration_status(uuid: str) -> Any:
        return jsonify(agent.migrations.status(uuid))

    @app.post("/v1/vms/<uuid>/migration/cancel")
    def cancel_migration(uuid: str) -> Any:
        return jsonify(agent.migrations.cancel(uuid))

    @app.post("/v1/vms/<uuid>/incoming")
    def prepare_incoming(uuid: str) -> Any:
        spec = body()
        vlans = spec.get("vlans") or []
        agent.vms.ensure_vlans(vlans)  # VLAN bridges the VM plugs into, made before the check
        if agent.config.switch == "ovs":  # OVS bridges are no Linux bridges: the check below cannot see them
            spec["bridges"] = [b for b in spec.get("bridges", []) if b not in {v["bridge"] for v in vlans}]
        return jsonify(agent.migrations.prepare_incoming(uuid, spec))

    @app.delete("/v1/vms/<uuid>/incoming")
    def abort_incoming(uuid: str) -> Any:
        return jsonify(agent.migrations.abort_incoming(uuid, request.args.get("storage", "local")))

    @app.get("/v1/vms/<uuid>/seed")
    def seed(uuid: str) -> Any:
        return jsonify({"seed": agent.migrations.seed_bytes(uuid, request.args.get("storage", "local"))})

    @app.post("/v1/vms/<uuid>/cleanup-source")
    def cleanup_source(uuid: str) -> Any:
        return jsonify(agent.migrations.cleanup_source(uuid))

    @app.post("/v1/domains")
    def define_domain() -> Any:
        return jsonify(agent.migrations.define_offline(str(body()["xml"])))

    @app.post("/v1/vms/<uuid>/undefine")
    def undefine(uuid: str) -> Any:
        return jsonify(agent.vms.undefine(uuid, delete_volumes=bool(body().get("delete_volumes"))))

    @app.get("/v1/volumes/<name>")
    def read_volume(name: str) -> Any:
        size, chunks = agent.storage.read_volume(name)
        return Response(chunks, mimetype="application/octet-stream", headers={"Content-Length": str(size)})

    @app.put("/v1/volumes/<name>")
    def write_volume(name: str) -> Any:
        size = int(request.headers.get("X-Volume-Size", "-1"))
        if size < 0:
            raise VerbError("X-Volume-Size is required", 400, "bad_request")
        stream = request.stream
        path = agent.storage.receive_volume(name, size, iter(lambda: stream.read(CHUNK), b""))
        return jsonify({"path": path})

    @app.get("/v1/vms/<uuid>/xml")
    def get_xml(uuid: str) -> Any:
        return jsonify(agent.xml.get(uuid))

    @app.put("/v1/vms/<uuid>/xml")
    def define_xml(uuid: str) -> Any:
        data = body()
        return jsonify(agent.xml.define(uuid, str(data["xml"]), bool(data.get("restart"))))

    @app.post("/v1/vms/<uuid>/network")
    def renetwork(uuid: str) -> Any:
        return jsonify(agent.vms.renetwork(uuid, body()))

    @app.get("/v1/domains/<uuid>/inspect")
    def inspect_domain(uuid: str) -> Any:
        return jsonify(agent.adoption.inspect(uuid))

    @app.post("/v1/domains/<uuid>/adopt")
    def adopt_domain(uuid: str) -> Any:
        data = body()
        return jsonify(agent.adoption.adopt(uuid, str(data["vm_id"]), str(data.get("owner", ""))))

    @app.get("/v1/vms/<uuid>/guest")
    def guest(uuid: str) -> Any:
        return jsonify(agent.vms.guest_info(uuid))

    return app
