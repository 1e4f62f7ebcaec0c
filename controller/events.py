"""The audit log: an append-only record of who did what, when, from where."""

from __future__ import annotations

from typing import Any

from controller import reqid
from controller.db import Database, now


def record(
    db: Database,
    action: str,
    object_type: str,
    object_id: str | None,
    result: str = "ok",
    detail: str = "",
    username: str | None = None,
    remote_addr: str | None = None,
) -> None:
    """Append one event; joins the caller's transaction when there is one."""
    with db.write() as w:
        w.execute(
            "INSERT INTO events (at, username, action, object_type, object_id, result, detail,"
            " remote_addr, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [now(), username, action, object_type, object_id, result, detail, remote_addr, reqid.get()],
        )


def recent(db: Database, limit: int = 100) -> list[dict[str, Any]]:
    """Return the newest events first."""
    return db.all("SELECT * FROM events ORDER BY id DESC LIMIT ?", [limit])
