"""VM consoles: single-use session tokens and the websocket proxy that relays VNC to the VM's agent.

A console session is a random token in the URL of the controller's console port. It is
bound, at issue time, to the user who asked for it and to one VM; it is spent on first
use and dies after 60 s. On connect the proxy also needs that same user's credentials
(the UI's session cookie, or the API token as a bearer header), so a URL that leaks
(logs, browser history, a shoulder) is useless on its own. Only hashes of tokens are kept.
"""

from __future__ import annotations

import http
import logging
import ssl
import threading
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.http11 import Request, Response
from websockets.sync.connection import Connection
from websockets.sync.server import ServerConnection, serve

from controller import auth
from controller.consoletokens import Grant
from controller.core import Core
from controller.wsservice import WebsocketService

log = logging.getLogger(__name__)
PATH_PREFIX = "/console/"


def _binary_if_asked(_conn: ServerConnection, offered: Any) -> Any:
    """Accept noVNC's old 'binary' subprotocol when offered; newer clients offer none."""
    return "binary" if "binary" in offered else None


# Returns the user id a request's Cookie header proves, or None.
SessionReader = Callable[[str], int | None]


def flask_session_reader(app: Any) -> SessionReader:
    """Return a reader of the UI's signed session cookie, with the app's own key and cookie name."""
    serializer = app.session_interface.get_signing_serializer(app)
    name = app.config["SESSION_COOKIE_NAME"]
    max_age = int(app.permanent_session_lifetime.total_seconds())  # what Flask itself accepts

    def read(cookie_header: str) -> int | None:
        try:
            morsel = SimpleCookie(cookie_header).get(name)
        except CookieError:
            return None
        if morsel is None or serializer is None:
            return None
        try:
            data = serializer.loads(morsel.value, max_age=max_age)
        except Exception:  # a bad signature or garbage: no user
            return None
        user_id = data.get("user_id") if isinstance(data, dict) else None
        return int(user_id) if user_id else None

    return read


class ConsoleProxy(WebsocketService):
    """The console port: checks the token and the caller, then relays to the VM host's agent."""

    def __init__(self, core: Core, session_user: SessionReader, host: str, port: int,
                 tls: ssl.SSLContext | None, origins: list[str] | None = None) -> None:
        self.core, self.session_user = core, session_user
        # No Origin header: a non-browser client (the CLI). A browser's must be the UI's own.
        allowed: Any = [*origins, None] if origins else None
        self.server = serve(self._relay, host, port, ssl=tls, process_request=self._check,
                            select_subprotocol=_binary_if_asked, origins=allowed, compression=None)

    def _caller(self, request: Request) -> int | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            user = auth.user_for_token(self.core.db, header[7:].strip())
            return int(user["id"]) if user else None
        return self.session_user(request.headers.get("Cookie", ""))

    def _check(self, conn: ServerConnection, request: Request) -> Response | None:
        """Refuse the handshake unless the token is alive and the caller is the user it was issued to."""
        token = request.path.split("?", 1)[0].removeprefix(PATH_PREFIX) \
            if request.path.startswith(PATH_PREFIX) else ""
        if not token:
            return self._refuse(conn, http.HTTPStatus.UNAUTHORIZED, "a console token is required; "
                                "ask for one with POST /api/v1/vms/{ref}/console")
        grant = self.core.consoles.redeem(token)
        if grant is None:
            return self._refuse(conn, http.HTTPStatus.FORBIDDEN, "this console token is unknown, used or expired; "
                                "ask for a new one (tokens work once, within 60 s)")
        caller = self._caller(request)
        if caller != grant.user_id:
            return self._refuse(conn, http.HTTPStatus.FORBIDDEN, "this console token was issued to another user, "
                                "or you are not logged in; open the console from your own session")
        conn.grant = grant  # type: ignore[attr-defined]
        return None

    def _refuse(self, conn: ServerConnection, status: http.HTTPStatus, message: str) -> Response:
        log.warning("console refused from %s: %s", conn.remote_address[0], message)
        return conn.respond(status, message + "\n")

    def _relay(self, conn: ServerConnection) -> None:
        grant: Grant = conn.grant  # type: ignore[attr-defined]
        try:
            host = self.core.db.one("SELECT * FROM hosts WHERE id = ?", [grant.host_id])
            if host is None:
                raise OSError("the VM's host left the inventory")
            upstream = self.core.agents.console(host, grant.vm_id)
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            log.warning("console of %s: agent unreachable: %s", grant.vm_name, exc)
            conn.close(1011, "the VM's host did not open the console; is its agent running?")
            return
        log.info("console of %s opened for user %d", grant.vm_name, grant.user_id)
        with upstream:
            splice(conn, upstream)
        log.info("console of %s closed", grant.vm_name)


def splice(a: Connection, b: Connection) -> None:
    """Relay binary messages both ways between two websockets until either side closes."""

    def pump(src: Connection, dst: Connection) -> None:
        try:
            for message in src:
                dst.send(message)
        except (ConnectionClosed, OSError):
            pass
        finally:
            dst.close()
            src.close()

    other = threading.Thread(target=pump, args=(b, a), name="console-down", daemon=True)
    other.start()
    pump(a, b)
    other.join(timeout=15)
