"""What the controller's console proxy and the agent's VNC relay share: a websockets server run in a thread."""

from __future__ import annotations

from websockets.sync.server import Server


class WebsocketService:
    """A websockets sync server with the three things its owner's thread and tests need."""

    server: Server

    @property
    def port(self) -> int:
        """Return the port actually bound (useful with port 0)."""
        return int(self.server.socket.getsockname()[1])

    def serve_forever(self) -> None:
        """Serve until shutdown()."""
        self.server.serve_forever()

    def shutdown(self) -> None:
        """Stop accepting and close open connections."""
        self.server.shutdown()
