"""The inventory database: SQLite in WAL mode, one writer at a time."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import sqlite_utils

BUSY_TIMEOUT_MS = 10_000


def now() -> str:
    """Return the current time as an ISO 8601 UTC string."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _migrations() -> list[tuple[int, str]]:
    """Return (version, sql) for every migration shipped in schema/migrations."""
    root = Path(__file__).resolve().parent.parent / "schema" / "migrations"
    if not root.is_dir():  # installed as a wheel: shipped as package data
        root = Path(str(resources.files("controller") / "migrations"))
    out = []
    for path in sorted(root.glob("*.sql")):
        out.append((int(path.name.split("_", 1)[0]), path.read_text()))
    return out


class Database:
    """Owns the SQLite file: per-thread connections, migrations and the write lock."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._local = threading.local()
        self._write_lock = threading.Lock()

    def _connect(self) -> sqlite_utils.Database:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
        conn.isolation_level = None  # we issue BEGIN IMMEDIATE ourselves
        db = sqlite_utils.Database(conn)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        return db

    @property
    def db(self) -> sqlite_utils.Database:
        """Return this thread's connection, opening it on first use."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            self._local.db = db
        return db

    def migrate(self, target: int | None = None) -> int:
        """Apply every migration newer than the file's user_version (up to target); return the version."""
        db = self.db
        if db.journal_mode != "wal":
            db.enable_wal()
        with self.write():
            current = db.execute("PRAGMA user_version").fetchone()[0]
            for version, sql in _migrations():
                if version > current and (target is None or version <= target):
                    for statement in _split_sql(sql):
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version={int(version)}")
                    current = version
        return int(current)

    @contextmanager
    def write(self) -> Iterator[sqlite_utils.Database]:
        """Run the block as one BEGIN IMMEDIATE transaction, serialised in this process."""
        db = self.db
        if db.conn.in_transaction:  # nested: join the outer transaction
            yield db
            return
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.conn.rollback()
                raise
            db.execute("COMMIT")

    def one(self, sql: str, params: Any = ()) -> dict[str, Any] | None:
        """Return the first row of a query as a dict, or None."""
        for row in self.db.query(sql, params):
            return row
        return None

    def all(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        """Return every row of a query as dicts."""
        return list(self.db.query(sql, params))

    def close(self) -> None:
        """Close this thread's connection."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements (no triggers with inner semicolons yet)."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
