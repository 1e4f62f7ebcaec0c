"""The agent channel's controller side: served on its own port with mutual TLS.

cheroot verifies the client certificate against the labcloud CA; here the
certificate's fingerprint must also belong to an enrolled host.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, g, jsonify, request, send_file

from controller import hosts, reqid
from controller.core import Core
from controller.errors import ApiError, NotFound
from controller.ops.images import image_path

bp = Blueprint("agent_channel", __name__, url_prefix="/agent/v1")


def _core() -> Core:
    from flask import current_app

    core: Core = current_app.extensions["labcloud"]
    return core


@bp.before_request
def identify_host() -> None:
    """Find the enrolled host from the verified client certificate."""
    g.host = hosts.host_for_cert(_core(), request.environ.get("SSL_CLIENT_CERT"))


@bp.post("/heartbeat")
def heartbeat() -> Any:
    """Take a host's facts and domain states."""
    data = request.get_json(silent=True) or {}
    return jsonify(hosts.heartbeat(_core(), g.host, data))


@bp.get("/images/<sha256>")
def image(sha256: str) -> Any:
    """Stream a base image to a host."""
    path = image_path(_core(), sha256)
    if path is None:
        raise NotFound(f"no available image with sha256 {sha256}")
    return send_file(path, mimetype="application/octet-stream", conditional=True)


def create_agent_app(core: Core) -> Flask:
    """Return the WSGI app of the agent channel."""
    app = Flask("labcloud-agent-channel")
    app.extensions["labcloud"] = core
    app.register_blueprint(bp)

    @app.before_request
    def bind_request_id() -> None:
        reqid.set(reqid.accept(request.headers.get(reqid.HEADER)))

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Any:
        resp = jsonify({"error": {"code": exc.code, "message": exc.message, "request_id": reqid.get()}})
        return resp, exc.status

    return app
