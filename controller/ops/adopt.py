"""Adopting an unmanaged domain: its disk, NICs, MACs and addresses enter the inventory as a VM."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from controller import events, ipam
from controller.core import Core
from controller.db import now
from controller.errors import BadRequest, Conflict, NotFound
from controller.ops.vms import NAME_RE, lookup
from controller.sync import vm_state
from controller.tasks import TaskContext

log = logging.getLogger(__name__)


def _validate(core: Core, body: dict[str, Any], default_name: str, user: dict[str, Any]) -> dict[str, Any]:
    name = body.get("name", default_name)
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise BadRequest(f"'name' must be 1-63 lowercase letters, digits or '-' (the domain is called"
                         f" {default_name!r}); give one that is")
    owner_ref = body.get("owner", user["username"])
    owner = core.db.one("SELECT id, username FROM users WHERE username = ?", [str(owner_ref)])
    if owner is None:
        raise BadRequest(f"unknown owner {owner_ref!r}")
    networks = body.get("networks", [])
    if not isinstance(networks, list) or not all(isinstance(n, dict) for n in networks):
        raise BadRequest("'networks' must list {\"mac\"?: MAC, \"network\"?: NAME, \"ip\"?: ADDRESS}")
    return {"name": name, "owner": owner, "networks": networks, "flavor": body.get("flavor")}


def _flavor(core: Core, ref: Any, facts: dict[str, Any]) -> dict[str, Any] | None:
    if ref is not None:
        return lookup(core, "flavors", ref, "flavor")
    return core.db.one("SELECT * FROM flavors WHERE vcpus = ? AND memory_mib = ? AND disk_gib = ?",
                       [facts["vcpus"], facts["memory_mib"], facts["disk_gib"]])


def _nic_plan(core: Core, facts: dict[str, Any], mapping: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Decide each NIC's network and address: from the body, else the bridge and the guest agent."""
    by_mac = {str(m.get("mac", "")).lower(): m for m in mapping if m.get("mac")}
    if len(facts["nics"]) == 1 and len(mapping) == 1 and not mapping[0].get("mac"):
        by_mac[facts["nics"][0]["mac"]] = mapping[0]
    unknown = set(by_mac) - {n["mac"] for n in facts["nics"]}
    if unknown:
        raise BadRequest(f"the domain has no interface with MAC {', '.join(sorted(unknown))}")
    plan = []
    for nic in facts["nics"]:
        given = by_mac.get(nic["mac"], {})
        if given.get("network") is not None:
            net = ipam.network_by_ref(core.db, given["network"])
        else:
            nets = core.db.all("SELECT * FROM networks WHERE bridge = ?", [nic["bridge"]])
            if len(nets) != 1:
                raise BadRequest(f"interface {nic['mac']} is on bridge {nic['bridge']}, which is "
                                 f"{'no' if not nets else 'more than one'} labcloud network; name its 'network'")
            net = nets[0]
        ip = given.get("ip")
        if ip is None:
            cidr = ipaddress.ip_network(net["cidr"])
            found = [a for a in facts["guest_addresses"].get(nic["mac"], []) if ipaddress.ip_address(a) in cidr]
            if not found:
                raise BadRequest(f"no address known for interface {nic['mac']} on network {net['name']} (the guest"
                                 " agent does not answer); give its 'ip' in 'networks'")
            ip = found[0]
        plan.append({"mac": nic["mac"], "network": net, "ip": str(ip)})
    return plan


def adopt(core: Core, uuid: str, body: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """Check an unmanaged domain, register its addresses and the VM, and start the adoption task."""
    row = core.db.one("SELECT * FROM unmanaged_domains WHERE uuid = ?", [uuid])
    if row is None:
        raise NotFound(f"no unmanaged domain {uuid}; list them with GET /api/v1/unmanaged")
    host = core.db.one("SELECT * FROM hosts WHERE id = ?", [row["host_id"]]) or {}
    if host.get("state") == "down":
        raise Conflict(f"host {host.get('name')} is down; adopt when it reports again")
    v = _validate(core, body, row["name"], user)
    agent = core.agent(host["id"])
    facts = agent.inspect_domain(uuid)
    if facts["problems"]:
        raise Conflict(f"domain {row['name']} cannot be adopted: " + "; ".join(facts["problems"]))
    image = core.db.one("SELECT * FROM images WHERE sha256 = ?", [facts["image_sha256"]])
    if image is None:
        raise Conflict(f"the disk's base image {facts['image_sha256']} is not in the catalog; import it first")
    flavor = _flavor(core, v["flavor"], facts)
    plan = _nic_plan(core, facts, v["networks"])
    db = core.db
    with db.write() as w:
        if db.one("SELECT 1 FROM vms WHERE name = ?", [v["name"]]):
            raise Conflict(f"a VM named {v['name']!r} exists already; give another 'name'")
        if db.one("SELECT 1 FROM vms WHERE id = ?", [uuid]):
            raise Conflict(f"domain {uuid} is already a VM")
        stamp = now()
        w.execute(
            "INSERT INTO vms (id, name, owner_id, host_id, image_id, flavor_id, vcpus, memory_mib, disk_gib,"
            " hostname, storage, state, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'local', 'building', ?, ?)",
            [uuid, v["name"], v["owner"]["id"], host["id"], image["id"], flavor["id"] if flavor else None,
             facts["vcpus"], facts["memory_mib"], facts["disk_gib"], v["name"], stamp, stamp],
        )
        for idx, nic in enumerate(plan):
            net = nic["network"]
            holder = db.one("SELECT v.name FROM ip_allocations a LEFT JOIN vms v ON v.id = a.vm_id"
                            " WHERE a.network_id = ? AND a.address = ?", [net["id"], nic["ip"]])
            if holder is not None:  # raising here rolls the whole transaction back: nothing changed
                raise Conflict(f"address {nic['ip']} on network {net['name']} is held by VM {holder['name']};"
                               " resolve that first or give another 'ip'")
            ipam.allocate(db, net, uuid, nic["ip"])
            if db.one("SELECT 1 FROM vm_nics WHERE mac = ?", [nic["mac"]]):
                raise Conflict(f"MAC {nic['mac']} already belongs to another VM")
            w.execute("INSERT INTO vm_nics (vm_id, idx, network_id, mac, address) VALUES (?, ?, ?, ?, ?)",
                      [uuid, idx, net["id"], nic["mac"], nic["ip"]])
        w.execute("DELETE FROM unmanaged_domains WHERE uuid = ?", [uuid])
        task_id = core.tasks.create("vm.adopt", user["id"], uuid, v["name"], host["id"])
        events.record(db, "vm.adopt", "vm", uuid, "accepted",
                      f"domain {row['name']} on {host['name']} as {v['name']}", user["username"])

    def run(ctx: TaskContext) -> dict[str, Any]:
        ctx.progress(30, f"taking in domain {row['name']} on {host['name']}")
        out = core.agent(host["id"]).adopt_domain(uuid, uuid, v["owner"]["username"])
        with db.write() as w2:
            w2.execute("UPDATE vms SET state = ?, domain_xml = ?, updated_at = ? WHERE id = ?",
                       [vm_state(out.get("state", "")), out.get("xml"), now(), uuid])
        events.record(db, "vm.adopt", "vm", uuid, "ok", f"adopted on {host['name']}", user["username"])
        return {"vm_id": uuid, "host": host["name"], "addresses": [n["ip"] for n in plan]}

    def rollback() -> None:
        # The domain stays as it was on the host: forget the VM, its NICs and addresses; the
        # next heartbeat lists the domain as unmanaged again.
        with db.write() as w3:
            w3.execute("DELETE FROM vms WHERE id = ?", [uuid])
        events.record(db, "vm.adopt", "vm", uuid, "failed", "not adopted; nothing kept", user["username"])

    core.tasks.submit(task_id, run, on_failure=rollback)
    return core.tasks.get(task_id)
