"""NIC operations on existing VMs: a stopped VM's NIC gets another address."""

from __future__ import annotations

from typing import Any

from controller import events, ipam
from controller.core import Core
from controller.db import now
from controller.errors import BadRequest, Conflict, NotFound
from controller.ops.vms import nic_spec
from controller.tasks import TaskContext


def _specs(core: Core, vm_id: str, new: dict[int, str]) -> list[dict[str, Any]]:
    """Return the agent's NIC specs of a VM, with some NICs' addresses replaced."""
    rows = core.db.all("SELECT n.idx, n.mac, n.address, n.is_default, n.network_id FROM vm_nics n"
                       " WHERE n.vm_id = ? ORDER BY n.idx", [vm_id])
    out = []
    for row in rows:
        net = core.db.one("SELECT * FROM networks WHERE id = ?", [row["network_id"]]) or {}
        out.append(nic_spec(net, row["mac"], new.get(row["idx"], row["address"]), bool(row["is_default"])))
    return out


def change_address(core: Core, vm: dict[str, Any], idx: int, body: dict[str, Any],
                   user: dict[str, Any]) -> dict[str, Any]:
    """Hold a new address for NIC idx of a stopped VM, then have its host rewrite seed and filters.

    The old address stays held until the host has the new seed, so a failure changes nothing
    and the old address is never handed to another VM meanwhile.
    """
    requested = body.get("ip")
    if requested is not None and not isinstance(requested, str):
        raise BadRequest("'ip' must be an address string, or omitted for the lowest free address")
    db = core.db
    with db.write():
        nic = db.one("SELECT * FROM vm_nics WHERE vm_id = ? AND idx = ?", [vm["id"], idx])
        if nic is None:
            raise NotFound(f"VM {vm['name']} has no NIC {idx}")
        current = db.one("SELECT state FROM vms WHERE id = ?", [vm["id"]]) or {}
        if current.get("state") != "shutoff":
            raise Conflict(f"VM {vm['name']} is {current.get('state')}; shut it down before changing its address")
        net = db.one("SELECT * FROM networks WHERE id = ?", [nic["network_id"]]) or {}
        if requested is not None and requested == nic["address"]:
            raise BadRequest(f"NIC {idx} of {vm['name']} has {requested} already")
        if core.tasks.active_for_vm(vm["id"]):
            raise Conflict(f"VM {vm['name']} is busy with another task; wait for it to finish")
        address = ipam.allocate(db, net, vm["id"], requested)
        task_id = core.tasks.create("vm.readdress", user["id"], vm["id"], vm["name"], vm["host_id"])
    old = nic["address"]
    specs = _specs(core, vm["id"], {idx: address})
    hostname = vm["hostname"]

    def run(ctx: TaskContext) -> dict[str, Any]:
        ctx.progress(30, f"writing a new seed for {address} on the host")
        out = core.agent(vm["host_id"]).renetwork(vm["id"], specs, hostname)
        with db.write() as w:
            w.execute("UPDATE vm_nics SET address = ? WHERE id = ?", [address, nic["id"]])
            w.execute("DELETE FROM ip_allocations WHERE network_id = ? AND address = ? AND vm_id = ?",
                      [net["id"], old, vm["id"]])
            w.execute("UPDATE vms SET domain_xml = ?, updated_at = ? WHERE id = ?", [out.get("xml"), now(), vm["id"]])
        events.record(db, "vm.readdress", "vm", vm["id"], "ok", f"nic {idx}: {old} -> {address}", user["username"])
        return {"nic": idx, "old": old, "address": address, "instance_id": out.get("instance_id")}

    def rollback() -> None:
        with db.write() as w:
            w.execute("DELETE FROM ip_allocations WHERE network_id = ? AND address = ? AND vm_id = ?",
                      [net["id"], address, vm["id"]])
        events.record(db, "vm.readdress", "vm", vm["id"], "failed", f"nic {idx} keeps {old}", user["username"])

    core.tasks.submit(task_id, run, on_failure=rollback)
    return core.tasks.get(task_id)
