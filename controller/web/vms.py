"""VMs: the list with filters, the detail page, lifecycle actions, destroy, console."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for

from controller import views
from controller.agentclient import AgentError
from controller.errors import ApiError, NotFound
from controller.ops import vms as ops
from controller.ops import xml as xml_ops
from controller.web.common import core, current_user, db

bp = Blueprint("vms", __name__)

ACTIONS = {
    "start": ("Start", "Boot the VM.", ("shutoff", "crashed")),
    "shutdown": ("Shut down", "Ask the guest to power off (ACPI).", ("running", "paused")),
    "reboot": ("Reboot", "Ask the guest to reboot.", ("running",)),
    "poweroff": ("Power off", "Force the VM off at once, like pulling the plug.", ("running", "paused", "crashed")),
}


def _task_arg() -> dict[str, Any] | None:
    task_id = request.args.get("task")
    return views.task_for_user(db(), task_id, current_user()) if task_id else None


@bp.get("/vms")
def index() -> Any:
    """List the VMs the user may see, with search and filters."""
    user, d = current_user(), db()
    search = request.args.get("q", "").strip()
    state = request.args.get("state", "")
    host = request.args.get("host", "")
    rows = views.vm_summaries(d, user, search=search, state=state, host=host)
    return render_template(
        "vms.html", vms=rows, search=search, state=state, host=host, states=views.VM_STATES,
        hosts=d.all("SELECT name FROM hosts ORDER BY name"), filtered=bool(search or state or host),
        task=_task_arg(),
    )


def _vm_page_data(ref: str) -> dict[str, Any]:
    c, user = core(), current_user()
    row = ops.find_vm(c, ref, user)  # 404 for other users' VMs, as in the API
    vm = ops.detail(c, row)
    tasks = views.recent_tasks(c.db, user, limit=20, vm_id=row["id"])
    return {
        "vm": vm, "row": row, "tasks": tasks, "addresses": views.vm_addresses(c.db, row["id"]),
        "active": next((t for t in tasks if t["state"] in views.ACTIVE_TASK_STATES), None),
        "host_row": views.find_host(c.db, row["host_id"]) if row["host_id"] else None,
    }


@bp.get("/vms/<ref>")
def detail(ref: str) -> Any:
    """Show one VM: state, addresses, disks, host, actions, domain XML, task history."""
    try:
        data = _vm_page_data(ref)
    except NotFound:
        # Just after a create whose task already failed and was rolled back: show that task, not a bare 404.
        task = _task_arg()
        if task is None or task["vm_name"] != ref:
            raise
        notice = f"VM {ref} does not exist: its creation failed and was undone. The task below says why."
        return render_template("task.html", task=task, notice=notice), 404
    hosts = [h for h in views.host_overview(db(), current_user()) if h["id"] != data["row"]["host_id"]]
    return render_template("vm.html", actions=ACTIONS, migrate_hosts=hosts, **data)


@bp.post("/vms/<ref>/actions/<action>")
def action(ref: str, action: str) -> Any:
    """Run a lifecycle action through the VM operations; the task's progress shows on the VM's page."""
    c, user = core(), current_user()
    vm = ops.find_vm(c, ref, user)
    try:
        task = ops.lifecycle(c, vm, action, user, {})
    except ApiError as exc:
        if exc.status == 404:
            raise
        flash(f"Could not {ACTIONS.get(action, (action,))[0].lower()} {vm['name']}: {exc.message}.", "error")
        return redirect(url_for("web.vms.detail", ref=vm["name"]))
    flash(f"{ACTIONS[action][0]}: task started for {vm['name']}.", "info")
    return redirect(url_for("web.vms.detail", ref=vm["name"], task=task["id"]) + "#tasks")


@bp.get("/vms/<ref>/destroy")
def destroy_form(ref: str) -> Any:
    """Ask for confirmation, naming what will be deleted."""
    return render_template("vm_destroy.html", **_vm_page_data(ref))


@bp.post("/vms/<ref>/destroy")
def destroy(ref: str) -> Any:
    """Destroy the VM once its name was typed to confirm."""
    c, user = core(), current_user()
    vm = ops.find_vm(c, ref, user)
    typed = request.form.get("confirm_name", "").strip()
    if typed != vm["name"]:
        message = f"Type the VM's name, {vm['name']}, to confirm." if not typed else \
            f"{typed!r} is not this VM's name; type {vm['name']} exactly to confirm."
        return render_template("vm_destroy.html", confirm_error=message, typed=typed, **_vm_page_data(ref)), 400
    try:
        task = ops.destroy(c, vm, user)
    except ApiError as exc:
        if exc.status == 404:
            raise
        return render_template("vm_destroy.html", confirm_error=f"{exc.message}.", typed=typed,
                               **_vm_page_data(ref)), exc.status
    flash(f"Destroying {vm['name']}: its domain, disks and seed are being deleted and its addresses released.",
          "info")
    return redirect(url_for("web.vms.index", task=task["id"]))


@bp.get("/vms/<ref>/console")
def console(ref: str) -> Any:
    """Show the VM's graphical console (noVNC, through the controller's console proxy)."""
    vm = ops.detail(core(), ops.find_vm(core(), ref, current_user()))
    return render_template("vm_console.html", vm=vm)


@bp.get("/vms/<ref>/xml")
def xml(ref: str) -> Any:
    """Edit the VM's domain XML (checked by a dry run, applied through the API), with its history."""
    c = core()
    row = ops.find_vm(c, ref, current_user())
    try:
        current, problem = xml_ops.current(c, row), None
    except (AgentError, ApiError) as exc:
        current, problem = None, str(exc.message if isinstance(exc, ApiError) else exc)
    return render_template("vm_xml.html", vm=ops.detail(c, row), current=current, problem=problem)
