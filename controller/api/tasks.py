"""Tasks and the audit log."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from controller import events
from controller.api.common import core, require_admin, user
from controller.errors import NotFound
from controller.ops import migrate
from controller.tasks import public

bp = Blueprint("api_tasks", __name__)


def _limit() -> int:
    try:
        return max(1, min(1000, int(request.args.get("limit", 100))))
    except ValueError:
        return 100


@bp.get("/tasks")
def list_tasks() -> Any:
    """List recent tasks (members see their own)."""
    c, u = core(), user()
    if u["role"] == "admin":
        rows = c.db.all("SELECT * FROM tasks ORDER BY created_at DESC LIMIT ?", [_limit()])
    else:
        rows = c.db.all("SELECT * FROM tasks WHERE user_id = ? ORDER BY created_at DESC LIMIT ?", [u["id"], _limit()])
    return jsonify({"tasks": [public(r) for r in rows]})


@bp.get("/tasks/<task_id>")
def get_task(task_id: str) -> Any:
    """Show a task: state, progress, error, result."""
    c, u = core(), user()
    task = c.tasks.get(task_id)
    if u["role"] != "admin" and task["user_id"] != u["id"]:
        raise NotFound(f"task {task_id} not found")
    return jsonify({"task": task})


@bp.post("/tasks/<task_id>/cancel")
def cancel_task(task_id: str) -> Any:
    """Ask a running migration (or drain) to stop; the VM stays where it runs."""
    return jsonify({"task": migrate.cancel(core(), task_id, user())})


@bp.get("/events")
def list_events() -> Any:
    """Admin: the audit log, newest first."""
    require_admin()
    return jsonify({"events": events.recent(core().db, _limit())})
