"""VMs: list, create, detail, lifecycle actions, destroy."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from controller import views
from controller.api.common import body, core, user
from controller.errors import NotFound
from controller.ops import console, migrate, nics, vms

bp = Blueprint("api_vms", __name__)


@bp.get("/vms")
def list_vms() -> Any:
    """List the VMs the caller may see (admins see all)."""
    return jsonify({"vms": [vms.present(r) for r in views.vm_summaries(core().db, user())]})


@bp.post("/vms")
def create_vm() -> Any:
    """Create a VM from an image, a flavor and networks; answers 202 with the task."""
    return jsonify({"task": vms.create(core(), body(), user())}), 202


@bp.get("/vms/<ref>")
def get_vm(ref: str) -> Any:
    """Show a VM: state, host, addresses, disks."""
    c = core()
    return jsonify({"vm": vms.detail(c, vms.find_vm(c, ref, user()))})


@bp.delete("/vms/<ref>")
def destroy_vm(ref: str) -> Any:
    """Destroy a VM: domain, overlay and seed deleted, addresses released."""
    c = core()
    return jsonify({"task": vms.destroy(c, vms.find_vm(c, ref, user()), user())}), 202


@bp.post("/vms/<ref>/<action>")
def vm_action(ref: str, action: str) -> Any:
    """Start, shut down (ACPI, with 'timeout'), power off or reboot a VM."""
    c = core()
    vm = vms.find_vm(c, ref, user())
    return jsonify({"task": vms.lifecycle(c, vm, action, user(), body())}), 202


@bp.post("/vms/<ref>/migrate")
def migrate_vm(ref: str) -> Any:
    """Move a VM to another host: live when it runs, offline when stopped; answers 202 with the task."""
    c = core()
    return jsonify({"task": migrate.migrate(c, vms.find_vm(c, ref, user()), body(), user())}), 202


@bp.put("/vms/<ref>/nics/<idx>")
def change_nic_address(ref: str, idx: str) -> Any:
    """Give a stopped VM's NIC another address (the requested one, or the lowest free); answers 202."""
    c = core()
    vm = vms.find_vm(c, ref, user())
    if not idx.isdigit():
        raise NotFound(f"VM {vm['name']} has no NIC {idx}; NICs are numbered from 0")
    return jsonify({"task": nics.change_address(c, vm, int(idx), body(), user())}), 202


@bp.get("/vms/<ref>/guest")
def guest_info(ref: str) -> Any:
    """Ask the guest agent for the VM's hostname and addresses."""
    c = core()
    vm = vms.find_vm(c, ref, user())
    return jsonify({"guest": c.agent(vm["host_id"]).guest_info(vm["id"])})


@bp.post("/vms/<ref>/console")
def open_console(ref: str) -> Any:
    """Issue a single-use, 60-second console session (a wss URL) for a running VM."""
    c = core()
    return jsonify({"console": console.open_console(c, vms.find_vm(c, ref, user()), user())})
