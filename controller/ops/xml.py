"""Domain XML operations: show, replace (checked, then applied), history and revert.

Check first, change second: parsing, name/uuid, the member policy (controller/xmlpolicy.py)
and the inventory's consistency are checked before anything is sent to the host; libvirt
then validates while defining (VIR_DOMAIN_DEFINE_VALIDATE). A refusal changes nothing and
is written to the audit log, as is every applied change. Every version libvirt holds is
kept in vm_xml_history, the first one recorded the first time it is needed.
"""

from __future__ import annotations

import difflib
from typing import Any

from lxml import etree

from controller import events, xmlpolicy
from controller.agentclient import AgentClient, AgentError
from controller.core import Core
from controller.db import now
from controller.errors import BadRequest, Conflict, NotFound, XmlRejected
from controller.ops.vms import detail
from controller.xmlpolicy import PolicyError

SOURCES = ("create", "edit", "revert", "host")


def _agent(core: Core, vm: dict[str, Any]) -> AgentClient:
    if not vm["host_id"]:
        raise Conflict(f"VM {vm['name']} has no host, so it has no domain XML")
    return core.agent(vm["host_id"])


def unified_diff(old: str, new: str, old_label: str = "current", new_label: str = "new") -> str:
    """Return the unified diff of two XML texts (empty when equal)."""
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        old_label, new_label))


def _latest(core: Core, vm_id: str) -> dict[str, Any] | None:
    return core.db.one("SELECT * FROM vm_xml_history WHERE vm_id = ? ORDER BY version DESC LIMIT 1", [vm_id])


def _owner(core: Core, vm: dict[str, Any]) -> str | None:
    row = core.db.one("SELECT username FROM users WHERE id = ?", [vm["owner_id"]])
    return row["username"] if row else None


def _record(core: Core, vm: dict[str, Any], xml: str, source: str, author: str | None) -> int:
    """Append a version (inside the caller's transaction when there is one); return its number."""
    with core.db.write() as w:
        latest = _latest(core, vm["id"])
        version = latest["version"] + 1 if latest else 1
        diff = unified_diff(latest["xml"], xml, f"version {latest['version']}", f"version {version}") if latest else ""
        w.execute("INSERT INTO vm_xml_history (vm_id, version, xml, diff, source, author, created_at)"
                  " VALUES (?, ?, ?, ?, ?, ?, ?)", [vm["id"], version, xml, diff, source, author, now()])
    return version


def _sync(core: Core, vm: dict[str, Any], xml: str) -> int:
    """Make the history end with what libvirt holds: the original on first use, a 'host' version on drift."""
    with core.db.write():
        latest = _latest(core, vm["id"])
        if latest is None:
            return _record(core, vm, xml, "create", _owner(core, vm))
        if latest["xml"] != xml:  # changed outside labcloud (virsh on the host, a migration)
            return _record(core, vm, xml, "host", None)
        return int(latest["version"])


def current(core: Core, vm: dict[str, Any]) -> dict[str, Any]:
    """Return libvirt's inactive, secure XML of the VM and the latest history version."""
    xml = str(_agent(core, vm).domain_xml(vm["id"])["xml"])
    return {"xml": xml, "version": _sync(core, vm, xml)}


def history(core: Core, vm: dict[str, Any]) -> list[dict[str, Any]]:
    """Return every version, newest first, without their XML."""
    if _latest(core, vm["id"]) is None:
        try:
            current(core, vm)
        except (AgentError, Conflict):
            if vm.get("domain_xml"):  # the host is away: the XML the create left is the original
                _record(core, vm, vm["domain_xml"], "create", _owner(core, vm))
    return core.db.all("SELECT version, author, created_at, diff, source FROM vm_xml_history WHERE vm_id = ?"
                       " ORDER BY version DESC", [vm["id"]])


def version(core: Core, vm: dict[str, Any], number: int) -> dict[str, Any]:
    """Return one version with its XML."""
    row = core.db.one("SELECT version, xml, author, created_at, diff, source FROM vm_xml_history"
                      " WHERE vm_id = ? AND version = ?", [vm["id"], number])
    if row is None:
        raise NotFound(f"VM {vm['name']} has no XML version {number}; list them with GET .../xml/history")
    return row


def _limits(core: Core, vm: dict[str, Any]) -> xmlpolicy.Limits:
    flavor = core.db.one("SELECT * FROM flavors WHERE id = ?", [vm["flavor_id"]]) if vm.get("flavor_id") else None
    if flavor is None:
        return xmlpolicy.Limits(vm["vcpus"], vm["memory_mib"])
    return xmlpolicy.Limits(max(flavor["vcpus"], vm["vcpus"]), max(flavor["memory_mib"], vm["memory_mib"]))


def _inventory(core: Core, vm: dict[str, Any], new: etree._Element, old: etree._Element) -> dict[str, int]:
    """Refuse XML that breaks what labcloud tracks; return the VM row's new vcpus and memory_mib."""
    nics: dict[str, etree._Element] = {}
    for iface in new.iterfind("./devices/interface"):
        mac = iface.find("mac")
        if mac is not None and mac.get("address"):
            nics[mac.get("address", "").lower()] = iface
    for row in core.db.all("SELECT n.mac, n.address, w.name AS network, w.bridge FROM vm_nics n"
                           " JOIN networks w ON w.id = n.network_id WHERE n.vm_id = ? ORDER BY n.idx", [vm["id"]]):
        found = nics.get(row["mac"].lower())
        if found is None:
            raise PolicyError(
                f"the NIC with MAC {row['mac']} is gone from the XML, but labcloud allocated {row['address']} on "
                f"network {row['network']} to that MAC: keep the NIC and its <mac address='{row['mac']}'/>",
                "devices/interface", None, code="inventory_conflict")
        iface = found
        source = iface.find("source")
        bridge = source.get("bridge") if source is not None else None
        if iface.get("type") == "bridge" and bridge != row["bridge"]:
            raise PolicyError(
                f"the NIC with MAC {row['mac']} must stay on bridge {row['bridge']} (network {row['network']}, "
                f"address {row['address']}); the XML puts it on {bridge!r}", "devices/interface/source",
                xmlpolicy.line_of(source if source is not None else iface), "bridge", code="inventory_conflict")
    tracked = [p for p in xmlpolicy.file_sources(old) if vm["id"] in p]
    kept = set(xmlpolicy.file_sources(new))
    for path in tracked:
        if path not in kept:
            raise PolicyError(f"the disk {path} is one of labcloud's volumes of this VM (root disk or seed); "
                              "it cannot be removed from the XML", "devices/disk", None, code="inventory_conflict")
    out = {"vcpus": vm["vcpus"], "memory_mib": vm["memory_mib"]}
    try:
        vcpu = new.find("vcpu")
        if vcpu is not None:
            out["vcpus"] = int(vcpu.get("current") or (vcpu.text or "").strip())
        memory = new.find("memory")
        if memory is not None:
            out["memory_mib"] = xmlpolicy.memory_kib(memory) // 1024
    except (ValueError, PolicyError):
        pass  # libvirt refuses what we cannot read
    return out


def _refuse(core: Core, vm: dict[str, Any], user: dict[str, Any], action: str, exc: PolicyError) -> XmlRejected:
    events.record(core.db, action, "vm", vm["id"], "refused", f"{exc.code}: {exc.message}", user["username"])
    return XmlRejected(exc.message, exc.code, exc.line, exc.element)


def apply(core: Core, vm: dict[str, Any], user: dict[str, Any], body: dict[str, Any],
          source: str = "edit") -> dict[str, Any]:
    """Check and apply new domain XML; answer what changed, the diff and whether it waits for a boot."""
    xml, restart, dry_run = body.get("xml"), body.get("restart", False), body.get("dry_run", False)
    if not isinstance(xml, str):
        raise BadRequest("'xml' must be the domain XML as a string")
    if not isinstance(restart, bool) or not isinstance(dry_run, bool):
        raise BadRequest("'restart' and 'dry_run' must be true or false")
    if core.tasks.active_for_vm(vm["id"]):
        raise Conflict(f"VM {vm['name']} is busy with another task; wait for it to finish")
    action = f"vm.xml.{source}"
    agent = _agent(core, vm)
    old_info = agent.domain_xml(vm["id"])
    old_xml, running = str(old_info["xml"]), old_info.get("state") == "running"
    base_version = _sync(core, vm, old_xml)
    try:
        new_root = xmlpolicy.parse(xml)
        old_root = xmlpolicy.parse(old_xml)
        xmlpolicy.check_identity(new_root, old_root)
        if user["role"] != "admin":
            xmlpolicy.check_member(new_root, old_root, _limits(core, vm))
        sizes = _inventory(core, vm, new_root, old_root)
    except PolicyError as exc:
        raise _refuse(core, vm, user, action, exc) from exc
    if dry_run:
        changed = xmlpolicy.canonical(new_root) != xmlpolicy.canonical(old_root)
        return {"vm": detail(core, vm), "version": base_version, "changed": changed,
                "diff": unified_diff(old_xml, xml if xml.endswith("\n") else xml + "\n"),
                "next_boot": changed and running, "restarted": False}
    try:
        out = agent.define_xml(vm["id"], xml, restart)
    except AgentError as exc:
        if exc.code not in ("libvirt_rejected", "invalid_xml"):
            raise
        line, element = xmlpolicy.libvirt_location(exc.detail, new_root)
        err = PolicyError(f"libvirt rejected the XML: {exc.detail.strip()}", element, line, code="libvirt_rejected")
        raise _refuse(core, vm, user, action, err) from exc
    new_xml = str(out["xml"])
    changed = new_xml != old_xml
    with core.db.write() as w:
        number = _record(core, vm, new_xml, source, user["username"]) if changed else base_version
        w.execute("UPDATE vms SET vcpus = ?, memory_mib = ?, domain_xml = ?, state = ?, updated_at = ?"
                  " WHERE id = ?", [sizes["vcpus"], sizes["memory_mib"], new_xml, out.get("state", vm["state"]),
                                    now(), vm["id"]])
        detail_text = f"version {number}" if changed else "no change"
        if out.get("restarted"):
            detail_text += "; restarted"
        if out.get("restart_error"):
            detail_text += f"; restart failed: {out['restart_error']}"
        events.record(core.db, action, "vm", vm["id"], "ok", detail_text, user["username"])
    return {"vm": detail(core, vm), "version": number, "changed": changed,
            "diff": unified_diff(old_xml, new_xml, f"version {base_version}", f"version {number}"),
            "next_boot": changed and running and not out.get("restarted") and out.get("state") == "running",
            "restarted": bool(out.get("restarted")),
            **({"restart_error": out["restart_error"]} if out.get("restart_error") else {})}


def revert(core: Core, vm: dict[str, Any], user: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Apply an earlier version again (as a new version), under the same checks as an edit."""
    number = body.get("version")
    if not isinstance(number, int) or isinstance(number, bool):
        raise BadRequest("'version' must be the number of a version from GET .../xml/history")
    old = version(core, vm, number)
    return apply(core, vm, user, {"xml": old["xml"], "restart": body.get("restart", False),
                                  "dry_run": body.get("dry_run", False)}, source="revert")
