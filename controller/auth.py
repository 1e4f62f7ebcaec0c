"""Users, password hashes, API tokens and login throttling."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from typing import Any

from werkzeug.security import check_password_hash, generate_password_hash

from controller.db import Database, now
from controller.errors import ApiError, BadRequest, Conflict

TOKEN_PREFIX = "lct_"  # noqa: S105 - a prefix, not a secret
MAX_FAILURES = 5
LOCKOUT_S = 60.0


def hash_password(password: str) -> str:
    """Return a scrypt hash of a password (Werkzeug's KDF)."""
    return generate_password_hash(password, method="scrypt")


def token_hash(token: str) -> str:
    """Return the stored form of an API token.

    Tokens are 256 random bits, so a fast hash is enough: unlike passwords they
    cannot be guessed from a dictionary.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(db: Database, username: str, password: str, role: str = "member") -> int:
    """Create a user; raise Conflict if the name is taken."""
    if role not in ("admin", "member"):
        raise BadRequest("role must be 'admin' or 'member'")
    if not username or len(password) < 8:
        raise BadRequest("a username and a password of at least 8 characters are needed")
    with db.write() as w:
        if db.one("SELECT id FROM users WHERE username = ?", [username]):
            raise Conflict(f"user {username!r} exists already")
        cur = w.execute(
            "INSERT INTO users (username, password_hash, role, created_at) VALUES (?, ?, ?, ?)",
            [username, hash_password(password), role, now()],
        )
        return int(cur.lastrowid or 0)


def bootstrap_admin(db: Database, password: str | None) -> str | None:
    """Create the first admin if there is no user; return the password if one was generated."""
    if db.one("SELECT id FROM users LIMIT 1"):
        return None
    generated = password is None
    password = password or secrets.token_urlsafe(12)
    create_user(db, "admin", password, "admin")
    return password if generated else None


def verify_password(db: Database, username: str, password: str) -> dict[str, Any] | None:
    """Return the user row when the password matches."""
    user = db.one("SELECT * FROM users WHERE username = ?", [username])
    if user and check_password_hash(user["password_hash"], password):
        return user
    # Spend the same time on unknown users so names cannot be probed by timing.
    check_password_hash(_DUMMY_HASH, password)
    return None


_DUMMY_HASH = hash_password(secrets.token_hex(8))


def issue_token(db: Database, user_id: int, name: str) -> str:
    """Create an API token for a user; only its hash is stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.write() as w:
        w.execute(
            "INSERT INTO api_tokens (user_id, name, token_hash, created_at) VALUES (?, ?, ?, ?)",
            [user_id, name, token_hash(token), now()],
        )
    return token


def revoke_token(db: Database, token: str) -> bool:
    """Delete an API token; return whether it existed."""
    with db.write() as w:
        cur = w.execute("DELETE FROM api_tokens WHERE token_hash = ?", [token_hash(token)])
        return cur.rowcount > 0


def user_for_token(db: Database, token: str) -> dict[str, Any] | None:
    """Return the user a bearer token belongs to."""
    row = db.one(
        "SELECT u.* FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?",
        [token_hash(token)],
    )
    return row


class LoginThrottle:
    """Refuses logins for a while after repeated failures from one address or for one user."""

    def __init__(self, max_failures: int = MAX_FAILURES, lockout_s: float = LOCKOUT_S) -> None:
        self.max_failures, self.lockout_s = max_failures, lockout_s
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def check(self, *keys: str) -> None:
        """Raise 429 when any key has too many recent failures."""
        cutoff = time.monotonic() - self.lockout_s
        with self._lock:
            for key in keys:
                recent = [t for t in self._failures.get(key, []) if t > cutoff]
                self._failures[key] = recent
                if len(recent) >= self.max_failures:
                    raise ApiError(
                        f"too many failed logins; wait {int(self.lockout_s)} s and try again",
                        code="too_many_attempts",
                        status=429,
                    )

    def failed(self, *keys: str) -> None:
        """Record a failure for each key."""
        stamp = time.monotonic()
        with self._lock:
            for key in keys:
                self._failures.setdefault(key, []).append(stamp)

    def succeeded(self, *keys: str) -> None:
        """Forget failures for each key."""
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
