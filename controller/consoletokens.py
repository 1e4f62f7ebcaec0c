"""Console session tokens: random, single-use, bound to one user and one VM, alive for 60 s."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

TOKEN_TTL_S = 60.0


@dataclass(frozen=True)
class Grant:
    """What a console token allows: one user, one VM on one host, until a deadline."""

    user_id: int
    vm_id: str
    vm_name: str
    host_id: str
    expires: float  # time.monotonic()


class ConsoleTokens:
    """Single-use, short-lived console tokens, kept in memory by their SHA-256 only."""

    def __init__(self, ttl_s: float = TOKEN_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._grants: dict[str, Grant] = {}
        self._lock = threading.Lock()

    def issue(self, user_id: int, vm: dict[str, Any]) -> tuple[str, dt.datetime]:
        """Return a new token for a user and a VM, and when it expires."""
        token = secrets.token_urlsafe(32)
        grant = Grant(int(user_id), str(vm["id"]), str(vm["name"]), str(vm["host_id"]),
                      time.monotonic() + self.ttl_s)
        with self._lock:
            stamp = time.monotonic()
            self._grants = {k: g for k, g in self._grants.items() if g.expires > stamp}  # forget dead ones
            self._grants[_digest(token)] = grant
        return token, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.ttl_s)

    def redeem(self, token: str) -> Grant | None:
        """Spend a token: its grant when it is known and alive, else None. A token works once."""
        with self._lock:
            grant = self._grants.pop(_digest(token), None)
        if grant is None or grant.expires <= time.monotonic():
            return None
        return grant


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
