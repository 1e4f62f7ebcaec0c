"""The Flask app factory of the public API and UI."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from flask import Flask, g, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect

from controller import api, reqid, web
from controller.config import Config
from controller.core import Core
from controller.pki import write_private

ROOT = Path(__file__).resolve().parent.parent
csrf = CSRFProtect()
STREAMED_BODY_ENDPOINTS = {"api.api_catalog.upload_image"}


def _secret_key(config: Config) -> bytes:
    """Return the session-signing key, made once and kept in the data directory."""
    path = config.data_dir / "session.key"
    if not path.exists():
        write_private(path, secrets.token_bytes(32))
    return path.read_bytes()


def create_app(config: Config | None = None, core: Core | None = None) -> Flask:
    """Build the public app: API, UI, CSRF, security headers, request ids."""
    config = config or Config.from_env()
    core = core or Core.start(config)
    app = Flask("labcloud", template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    app.config.update(
        SECRET_KEY=_secret_key(config),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=True,
        WTF_CSRF_TIME_LIMIT=None,
        MAX_CONTENT_LENGTH=64 * 1024 * 1024,
        JSON_SORT_KEYS=False,
    )
    app.extensions["labcloud"] = core

    @app.before_request
    def bind_request_id() -> None:
        reqid.set(reqid.accept(request.headers.get(reqid.HEADER)))
        g.user = None
        if request.endpoint in STREAMED_BODY_ENDPOINTS:
            # Read in chunks, never whole; the view enforces its own limit with a message that names it
            # (None would mean MAX_CONTENT_LENGTH again).
            request.max_content_length = 1 << 62

    # After bind_request_id: CSRF refusals must carry this request's id.
    csrf.init_app(app)

    api.register(app)
    web.register(app)
    # Bearer-token API calls carry no cookie, so CSRF cannot apply to them; API calls
    # made with the UI session must still send the CSRF token (X-CSRFToken).
    for name, blueprint in app.blueprints.items():
        if name == "api" or name.startswith("api."):
            csrf.exempt(blueprint)

    @app.before_request
    def csrf_for_session_api_calls() -> None:
        if (request.path.startswith("/api/") and request.method not in ("GET", "HEAD", "OPTIONS")
                and not request.headers.get("Authorization") and "session" in request.cookies):
            csrf.protect()

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError) -> Any:
        message = f"{exc.description.rstrip('.')}; reload the page and try again"
        if request.path.startswith("/api/"):
            return api.error_response(400, "csrf", message)
        return render_template("error.html", message=message), 400

    # The console's websocket is on its own port: a different origin that CSP must name.
    sockets = " ".join(f"wss://{name}:{config.console_port}" for name in config.server_names)

    @app.after_request
    def headers(resp: Any) -> Any:
        resp.headers[reqid.HEADER] = reqid.get()
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
            f" connect-src 'self' {sockets}; frame-ancestors 'none'; form-action 'self'"
        )
        return resp

    return app
