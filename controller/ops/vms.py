"""VM operations: each checks and reserves first, then runs as a task."""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

from controller import events, ipam
from controller.agentclient import AgentError
from controller.core import Core
from controller.db import now
from controller.errors import BadRequest, Conflict, NotFound
from controller.ops.images import image_path, shared_cache_lock
from controller.scheduler import Need, place
from controller.tasks import TaskContext, TaskFailed
from controller.views import vm_summaries

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
LIFECYCLE = ("start", "shutdown", "poweroff", "reboot")
SHUTDOWN_TIMEOUT_S = 120
RETRY_PAUSE_S = 2.0


def new_mac(db: Any) -> str:
    """Return a locally administered MAC (QEMU's 52:54:00 prefix) not used by any VM."""
    while True:
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        if not db.one("SELECT 1 FROM vm_nics WHERE mac = ?", [mac]):
            return mac


def find_vm(core: Core, ref: str, user: dict[str, Any]) -> dict[str, Any]:
    """Find a VM by UUID or name; other users' VMs are reported as not found."""
    vm = core.db.one("SELECT * FROM vms WHERE id = ? OR name = ?", [ref, ref])
    if vm is None or (user["role"] != "admin" and vm["owner_id"] != user["id"]):
        raise NotFound(f"VM {ref!r} not found")
    return vm


def lookup(core: Core, table: str, ref: Any, label: str) -> dict[str, Any]:
    """Return a catalog row (image, flavor) by name or id, or refuse with 400 naming where to look."""
    row = core.db.one(f"SELECT * FROM {table} WHERE name = ? OR CAST(id AS TEXT) = ?", [str(ref), str(ref)])  # noqa: S608 - table is ours
    if row is None:
        raise BadRequest(f"unknown {label} {ref!r}; list them with GET /api/v1/{table}")
    return row


def _validate_create(core: Core, body: dict[str, Any]) -> dict[str, Any]:
    name = body.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadRequest("'name' must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'")
    image = lookup(core, "images", body.get("image"), "image")
    if image["state"] != "available":
        raise Conflict(f"image {image['name']} is {image['state']}; wait for its import to finish")
    flavor = lookup(core, "flavors", body.get("flavor"), "flavor")
    nets = _nic_requests(core, body)
    keys = body.get("ssh_keys") or []
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise BadRequest("'ssh_keys' must be a list of public key strings")
    for field_name in ("password", "user_data", "hostname", "host"):
        if body.get(field_name) is not None and not isinstance(body[field_name], str):
            raise BadRequest(f"'{field_name}' must be a string")
    storage = body.get("storage", "local")
    if storage not in ("local", "shared"):
        raise BadRequest("'storage' must be 'local' (the host's pool) or 'shared' (the shared pool)")
    hostname = body.get("hostname") or name
    if not NAME_RE.match(hostname):
        raise BadRequest("'hostname' must be a valid host name label")
    return {"name": name, "image": image, "flavor": flavor, "nets": nets, "ssh_keys": keys, "hostname": hostname,
            "storage": storage}


def _nic_requests(core: Core, body: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the requested NICs from ``nics``, ``networks`` (its older name) or ``network`` + ``ip``."""
    if "network" in body and "nics" not in body and "networks" not in body:
        nets: Any = [{"network": body["network"], **({"ip": body["ip"]} if body.get("ip") else {})}]
    else:
        nets = body.get("nics", body.get("networks"))
    if not isinstance(nets, list) or not nets:
        raise BadRequest("'networks' must list at least one {\"network\": NAME, \"ip\"?: ADDRESS}"
                         " (or give 'nics', or one 'network' and 'ip')")
    for n in nets:
        if not isinstance(n, dict) or "network" not in n:
            raise BadRequest("each entry of 'networks' needs a 'network'")
        if n.get("ip") is not None and not isinstance(n["ip"], str):
            raise BadRequest("'ip' must be an address string")
        if not isinstance(n.get("default", False), bool):
            raise BadRequest("'default' must be true or false")
        ipam.network_by_ref(core.db, n["network"])
    defaults = [n for n in nets if n.get("default")]
    if len(defaults) > 1:
        raise BadRequest("only one NIC may be the default (the one with the default route); mark at most one")
    for n in defaults:
        if not ipam.network_by_ref(core.db, n["network"])["gateway"]:
            raise BadRequest(f"network {n['network']} has no gateway, so its NIC cannot carry the default route")
    return nets


def default_nic(nets: list[dict[str, Any]], networks: list[dict[str, Any]]) -> int | None:
    """Return the index of the NIC with the default route: the one marked default, else the first with a gateway."""
    for idx, entry in enumerate(nets):
        if entry.get("default"):
            return idx
    return next((idx for idx, net in enumerate(networks) if net["gateway"]), None)


def nic_spec(net: dict[str, Any], mac: str, address: str, is_default: bool) -> dict[str, Any]:
    """Return what the agent needs for one NIC: switch plumbing and the guest's addressing."""
    prefix = ipaddress.ip_network(net["cidr"]).prefixlen
    return {
        "mac": mac, "bridge": net["bridge"], "addresses": [f"{address}/{prefix}"],
        "gateway": net["gateway"] if is_default else None, "dns": json.loads(net["dns"]),
        "type": net.get("type", "bridge"), "vlan_id": net.get("vlan_id"), "interface": net.get("interface"),
        "mtu": net.get("mtu"), "persistent": bool(net.get("persistent")),
    }


def create(core: Core, body: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """Check a create request, reserve host and addresses, and start the create task."""
    v = _validate_create(core, body)
    flavor, image = v["flavor"], v["image"]
    vm_id = str(uuid.uuid4())
    db = core.db
    with db.write() as w:
        if db.one("SELECT 1 FROM vms WHERE name = ?", [v["name"]]):
            raise Conflict(f"a VM named {v['name']!r} exists already; choose another name")
        need = Need(flavor["vcpus"], flavor["memory_mib"], flavor["disk_gib"])
        host = place(db, need, body.get("host"))
        stamp = now()
        w.execute(
            "INSERT INTO vms (id, name, owner_id, host_id, image_id, flavor_id, vcpus, memory_mib, disk_gib,"
            " hostname, storage, state, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'building', ?, ?)",
            [vm_id, v["name"], user["id"], host["id"], image["id"], flavor["id"], flavor["vcpus"],
             flavor["memory_mib"], flavor["disk_gib"], v["hostname"], v["storage"], stamp, stamp],
        )
        nics: list[dict[str, Any]] = []
        networks = [ipam.network_by_ref(db, entry["network"]) for entry in v["nets"]]
        # Exactly one default route: the NIC marked default, else the first network with a gateway.
        default = default_nic(v["nets"], networks)
        for idx, (entry, net) in enumerate(zip(v["nets"], networks, strict=True)):
            address = ipam.allocate(db, net, vm_id, entry.get("ip"))
            mac = new_mac(db)
            w.execute(
                "INSERT INTO vm_nics (vm_id, idx, network_id, mac, address, is_default) VALUES (?, ?, ?, ?, ?, ?)",
                [vm_id, idx, net["id"], mac, address, int(idx == default)],
            )
            nics.append(nic_spec(net, mac, address, idx == default))
        task_id = core.tasks.create("vm.create", user["id"], vm_id, v["name"], host["id"])
        events.record(core.db, "vm.create", "vm", vm_id, "accepted", f"name={v['name']} host={host['name']}",
                      user["username"])
    spec = {
        "uuid": vm_id, "name": v["name"], "vcpus": flavor["vcpus"], "memory_mib": flavor["memory_mib"],
        "disk_gib": flavor["disk_gib"], "image_sha256": image["sha256"], "hostname": v["hostname"],
        "nics": nics, "ssh_keys": v["ssh_keys"], "password": body.get("password"),
        "user_data": body.get("user_data"), "vm_id": vm_id, "owner": user["username"], "storage": v["storage"],
        "cloud_init": bool(image["cloud_init"]),
    }

    sent = {"create": False}  # whether the host may hold a domain or disks of this VM

    def run(ctx: TaskContext) -> dict[str, Any]:
        agent = core.agent(host["id"])
        ctx.progress(10, f"caching image {image['name']} on {host['name']}")
        image_url = f"{core.config.agent_url}/agent/v1/images/{image['sha256']}"
        retry_s = core.config.agent_retry_s
        try:
            if v["storage"] == "shared":
                with shared_cache_lock(image["sha256"]):  # every host writes the same shared file
                    retry_unreachable(lambda: agent.ensure_image_in("shared", image["sha256"], image["size_bytes"],
                                                                    image_url), ctx, retry_s, "caching the image")
            else:
                retry_unreachable(lambda: agent.ensure_image(image["sha256"], image["size_bytes"], image_url), ctx,
                                  retry_s, "caching the image")
        except AgentError as exc:
            if exc.code == "fetch_failed" and image_path(core, image["sha256"]) is None:
                raise TaskFailed(f"image {image['name']} is not cached on {host['name']} and its file is missing on"
                                 " the controller (LABCLOUD_DATA_DIR/images); import the image again") from exc
            raise
        ctx.progress(60, f"creating disks, seed and domain on {host['name']}")
        sent["create"] = True
        # Idempotent by UUID: if the agent died half-way, asking again finishes the same VM.
        out = retry_unreachable(lambda: agent.create_vm(spec), ctx, retry_s, f"creating the VM on {host['name']}")
        if core.config.fault_create_pause_s:
            ctx.progress(80, f"fault injection: pausing {core.config.fault_create_pause_s:g} s")
            time.sleep(core.config.fault_create_pause_s)
        with db.write() as w2:
            w2.execute("UPDATE vms SET state = ?, domain_xml = ?, updated_at = ? WHERE id = ?",
                       [out.get("state", "running"), out.get("xml"), now(), vm_id])
        events.record(db, "vm.create", "vm", vm_id, "ok", f"running on {host['name']}", user["username"])
        return {"vm_id": vm_id, "host": host["name"], "addresses": [n["addresses"][0] for n in nics]}

    def rollback() -> None:
        if sent["create"]:
            try:
                retry_unreachable(lambda: core.agent(host["id"]).destroy_vm(vm_id), None, core.config.agent_retry_s,
                                  "rolling back")
            except Exception as exc:
                # The host may still run the domain: keep the VM and its addresses held, so
                # no other VM gets them, until an operator destroys it.
                with db.write() as w4:
                    w4.execute("UPDATE vms SET state = 'error', updated_at = ? WHERE id = ?", [now(), vm_id])
                events.record(db, "vm.create", "vm", vm_id, "failed", f"cleanup on host failed: {exc}",
                              user["username"])
                raise
        with db.write() as w3:
            w3.execute("DELETE FROM vms WHERE id = ?", [vm_id])  # cascades to NICs and addresses
        events.record(db, "vm.create", "vm", vm_id, "failed", "rolled back", user["username"])

    core.tasks.submit(task_id, run, on_failure=rollback)
    return core.tasks.get(task_id)


def retry_unreachable(call: Callable[[], dict[str, Any]], ctx: TaskContext | None, window_s: float,
                      what: str) -> dict[str, Any]:
    """Call an idempotent agent verb, again while the agent is unreachable (restarting), up to window_s."""
    deadline = time.monotonic() + window_s
    while True:
        try:
            return call()
        except AgentError as exc:
            if exc.status or time.monotonic() > deadline:  # the agent answered, or it stays away
                raise
            log.warning("%s: %s; retrying", what, exc)
            if ctx is not None:
                ctx.progress(ctx.percent, f"{what}: agent unreachable, retrying")
            time.sleep(RETRY_PAUSE_S)


def _reserve_task(core: Core, vm: dict[str, Any], kind: str, user: dict[str, Any]) -> str:
    with core.db.write():
        if core.tasks.active_for_vm(vm["id"]):
            raise Conflict(f"VM {vm['name']} is busy with another task; wait for it to finish")
        if vm["state"] in ("building", "deleting"):
            raise Conflict(f"VM {vm['name']} is {vm['state']}; wait for that to finish")
        return core.tasks.create(kind, user["id"], vm["id"], vm["name"], vm["host_id"])


def _wait_state(core: Core, vm: dict[str, Any], wanted: set[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    state = ""
    while time.monotonic() < deadline:
        state = core.agent(vm["host_id"]).vm(vm["id"]).get("state", "")
        if state in wanted:
            return state
        time.sleep(1.0)
    return state


def lifecycle(
    core: Core, vm: dict[str, Any], action: str, user: dict[str, Any], body: dict[str, Any]
) -> dict[str, Any]:
    """Start, shut down, power off or reboot a VM as a task."""
    if action not in LIFECYCLE:
        raise NotFound(f"unknown action {action!r}")
    timeout = body.get("timeout", SHUTDOWN_TIMEOUT_S)
    if not isinstance(timeout, int | float) or not 1 <= timeout <= 3600:
        raise BadRequest("'timeout' must be a number of seconds between 1 and 3600")
    task_id = _reserve_task(core, vm, f"vm.{action}", user)

    def run(ctx: TaskContext) -> dict[str, Any]:
        ctx.progress(20, f"{action} on host")
        out = core.agent(vm["host_id"]).vm_action(vm["id"], action)
        state = out.get("state", "")
        if action == "shutdown" and state != "shutoff":
            ctx.progress(50, f"waiting up to {timeout:.0f} s for the guest to power off")
            state = _wait_state(core, vm, {"shutoff"}, float(timeout))
            if state != "shutoff":
                raise TaskFailed(
                    f"the guest did not shut down within {timeout:.0f} s (state {state}); "
                    "use poweroff to force it off"
                )
        with core.db.write() as w:
            w.execute("UPDATE vms SET state = ?, updated_at = ? WHERE id = ?", [state, now(), vm["id"]])
        events.record(core.db, f"vm.{action}", "vm", vm["id"], "ok", f"state={state}", user["username"])
        return {"state": state}

    core.tasks.submit(task_id, run)
    return core.tasks.get(task_id)


def destroy(core: Core, vm: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """Destroy a VM: domain undefined, disks deleted, addresses released."""
    task_id = _reserve_task(core, vm, "vm.destroy", user)
    with core.db.write() as w:
        w.execute("UPDATE vms SET state = 'deleting', updated_at = ? WHERE id = ?", [now(), vm["id"]])

    def run(ctx: TaskContext) -> dict[str, Any]:
        if vm["host_id"]:
            ctx.progress(30, "removing domain, disks and seed on host")
            core.agent(vm["host_id"]).destroy_vm(vm["id"])
        ctx.progress(80, "releasing addresses")
        with core.db.write() as w2:
            released = ipam.release_vm(core.db, vm["id"])
            w2.execute("DELETE FROM vms WHERE id = ?", [vm["id"]])
        events.record(core.db, "vm.destroy", "vm", vm["id"], "ok", f"name={vm['name']}", user["username"])
        return {"released_addresses": released}

    def restore_state() -> None:
        with core.db.write() as w3:
            w3.execute("UPDATE vms SET state = 'error', updated_at = ? WHERE id = ?", [now(), vm["id"]])

    core.tasks.submit(task_id, run, on_failure=restore_state)
    return core.tasks.get(task_id)


def present(row: dict[str, Any]) -> dict[str, Any]:
    """Return a row of views.vm_summaries as the API shows a VM: state, host, addresses, disks."""
    out = {k: row[k] for k in ("id", "name", "state", "vcpus", "memory_mib", "disk_gib", "hostname", "storage",
                               "created_at", "updated_at", "owner", "image", "flavor", "nics", "ips")}
    out["host"] = {"id": row["host_id"], "name": row["host_name"]} if row["host_id"] else None
    out["disks"] = [{"name": "root", "size_gib": row["disk_gib"], "backing_image": row["image"]}]
    return out


def detail(core: Core, vm: dict[str, Any]) -> dict[str, Any]:
    """Return one VM (already authorised) as the API shows it."""
    rows = vm_summaries(core.db, None, vm_id=vm["id"])
    if not rows:
        raise NotFound(f"VM {vm['name']} not found")
    return present(rows[0])
