"""Tasks (live progress) and the audit log."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request

from controller import events, views
from controller.errors import NotFound
from controller.web.common import current_user, db, require_admin

bp = Blueprint("tasks", __name__)
TASK_STATES = ("pending", "running", "succeeded", "failed")


def _limit(default: int = 100) -> int:
    try:
        return max(1, min(1000, int(request.args.get("limit", default))))
    except ValueError:
        return default


@bp.get("/tasks")
def index() -> Any:
    """List recent tasks (members: their own), optionally only one state."""
    state = request.args.get("state", "")
    state = state if state in TASK_STATES else ""
    tasks = views.recent_tasks(db(), current_user(), limit=_limit(), state=state or None)
    return render_template("tasks.html", tasks=tasks, state=state, states=TASK_STATES)


@bp.get("/tasks/<task_id>")
def detail(task_id: str) -> Any:
    """Show one task: state, progress, message, error, result, request id."""
    task = views.task_for_user(db(), task_id, current_user())
    if task is None:
        raise NotFound(f"task {task_id} not found")
    return render_template("task.html", task=task)


@bp.get("/events")
def events_page() -> Any:
    """Admin: the audit log, newest first."""
    require_admin()
    return render_template("events.html", events=events.recent(db(), _limit()))
