"""The dashboard: hosts with their usage, VM counts by state, recent tasks and failures."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from controller import views
from controller.web.common import current_user, db

bp = Blueprint("dashboard", __name__)


@bp.get("/")
def index() -> Any:
    """Show what the cloud is doing now."""
    user, d = current_user(), db()
    counts = views.vm_state_counts(d, user)
    return render_template(
        "dashboard.html",
        hosts=views.host_overview(d, user),
        counts=counts,
        total=sum(counts.values()),
        states=[s for s in views.VM_STATES if counts.get(s)],
        tasks=views.recent_tasks(d, user, limit=10),
        failures=views.recent_tasks(d, user, limit=5, state="failed"),
    )
