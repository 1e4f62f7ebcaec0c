"""Backup and restore of the inventory: SQLite's online backup, and a restore that refuses a live database."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.db import BUSY_TIMEOUT_MS, _migrations

LOCK_NAME = "controller.lock"


class BackupError(Exception):
    """A backup or restore could not be done; the message says why and what to do."""


@contextmanager
def controller_lock(data_dir: Path, wait: bool = True) -> Iterator[None]:
    """Hold the data directory's lock: `serve` holds it while it runs, `restore` must get it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BackupError(f"a controller is running on {data_dir} (it holds {data_dir / LOCK_NAME});"
                              " stop it first (systemctl stop labcloud-controller)") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _summary(conn: sqlite3.Connection) -> dict[str, Any]:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    counts = {t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])  # noqa: S608 - fixed names
              for t in ("hosts", "vms", "tasks")}
    return {"schema_version": version, **counts}


def _check(conn: sqlite3.Connection, what: str) -> dict[str, Any]:
    """Check a copied inventory: intact, labcloud's, and a schema this controller can migrate."""
    try:
        result = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            raise BackupError(f"{what} is damaged ({result})")
        if conn.execute("PRAGMA foreign_key_check").fetchall():
            raise BackupError(f"{what} has rows pointing at missing rows")
        summary = _summary(conn)
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{what} is not a labcloud inventory ({exc})") from exc
    latest = max(v for v, _sql in _migrations())
    if not 1 <= summary["schema_version"] <= latest:
        raise BackupError(f"{what} has schema version {summary['schema_version']}; this controller knows"
                          f" versions 1 to {latest}: use a controller at least as new as the one that wrote it")
    return summary


def _copy(source: sqlite3.Connection, dest: Path) -> dict[str, Any]:
    """Copy a database with SQLite's backup API into dest (via a temporary file); return the copy's summary."""
    part = dest.with_name(dest.name + ".part")
    part.unlink(missing_ok=True)
    target = sqlite3.connect(part)
    try:
        # One step (pages=-1): a consistent snapshot in one read transaction. In WAL mode that
        # does not block the controller's writers, and no write can restart the copy.
        source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")  # no -wal file beside the copy
        summary = _check(target, f"the copy {part}")
    finally:
        target.close()
    part.chmod(0o600)  # password hashes and token hashes
    with part.open("rb") as f:
        os.fsync(f.fileno())
    part.replace(dest)
    return summary


def backup(db_path: Path, dest: Path) -> dict[str, Any]:
    """Copy the (possibly live) inventory to dest; return its schema version and row counts."""
    if not db_path.exists():
        raise BackupError(f"no inventory at {db_path}; set LABCLOUD_DATA_DIR to the controller's data directory")
    if dest.resolve() == db_path.resolve():
        raise BackupError("the backup file must not be the inventory itself")
    source = sqlite3.connect(db_path, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        source.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        summary = _copy(source, dest)
    finally:
        source.close()
    return {"file": str(dest), "bytes": dest.stat().st_size, **summary}


def restore(backup_file: Path, db_path: Path) -> dict[str, Any]:
    """Replace the inventory with a backup; refuse while a controller runs on it. The old file is kept aside."""
    if not backup_file.is_file():
        raise BackupError(f"no backup file {backup_file}")
    with controller_lock(db_path.parent, wait=False):
        source = sqlite3.connect(f"file:{backup_file}?mode=ro", uri=True)
        try:
            summary = _check(source, f"the backup {backup_file}")
            staged = db_path.with_name(db_path.name + ".restoring")
            _copy(source, staged)
        finally:
            source.close()
        kept = None
        if db_path.exists():
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            kept = db_path.with_name(f"{db_path.name}.before-restore-{stamp}")
            # The controller is stopped, so its -wal holds nothing another process still writes;
            # checkpoint it into the old file so the kept copy is complete.
            old = sqlite3.connect(db_path)
            old.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            old.close()
            db_path.replace(kept)
        for suffix in ("-wal", "-shm"):
            Path(str(db_path) + suffix).unlink(missing_ok=True)
        staged.replace(db_path)
    return {"file": str(db_path), "kept": str(kept) if kept else None, **summary}
