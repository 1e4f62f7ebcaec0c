"""The inventory follows the hosts' reports: missing VMs, unknown VMs of down hosts, unmanaged domains."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from flask.testing import FlaskClient

from controller import hosts
from controller.core import Core
from tests.conftest import Inventory, assert_error


def beat(core: Core, host: dict[str, Any], *domains: dict[str, Any]) -> None:
    """Deliver one heartbeat of a host reporting these domains."""
    row = core.db.one("SELECT * FROM hosts WHERE id = ?", [host["id"]]) or {}
    assert hosts.heartbeat(core, row, {"facts": {"vcpus": 8}, "domains": list(domains)})["ok"] is True


def dom(vm_or_uuid: Any, state: str = "running", name: str = "") -> dict[str, Any]:
    """One domain as the agent reports it."""
    uid = vm_or_uuid["id"] if isinstance(vm_or_uuid, dict) else vm_or_uuid
    return {"uuid": uid, "name": name or (vm_or_uuid.get("name", "") if isinstance(vm_or_uuid, dict) else ""),
            "state": state, "labcloud": {}}


def states(core: Core) -> dict[str, str]:
    return {r["name"]: r["state"] for r in core.db.all("SELECT name, state FROM vms")}


def vm_events(core: Core, action: str) -> list[dict[str, Any]]:
    return core.db.all("SELECT * FROM events WHERE action = ? ORDER BY id", [action])


def test_vanished_domain_makes_the_vm_missing_with_one_event_and_keeps_it(core: Core, inv: Inventory) -> None:
    host = inv.host("h1")
    lan = inv.network("lan")
    a = inv.vm("a", 1, host, network=lan, ip="10.0.0.50")
    b = inv.vm("b", 1, host, state="shutoff")
    beat(core, host, dom(a), dom(b, "shutoff"))
    beat(core, host, dom(b, "shutoff"))  # a's domain was undefined by hand
    assert states(core) == {"a": "missing", "b": "shutoff"}
    missing = vm_events(core, "vm.missing")
    assert len(missing) == 1 and missing[0]["object_id"] == a["id"] and "h1" in missing[0]["detail"]
    assert core.db.one("SELECT address FROM ip_allocations WHERE vm_id = ?", [a["id"]]) == {"address": "10.0.0.50"}
    beat(core, host, dom(b, "shutoff"))
    assert len(vm_events(core, "vm.missing")) == 1  # no event per heartbeat
    beat(core, host, dom(a, "shutoff"), dom(b, "shutoff"))  # defined again
    assert states(core) == {"a": "shutoff", "b": "shutoff"}
    assert [e["object_id"] for e in vm_events(core, "vm.found")] == [a["id"]]


def test_vm_with_a_running_task_is_not_missing(core: Core, inv: Inventory) -> None:
    host = inv.host("h1")
    a = inv.vm("a", 1, host)
    core.tasks.create("vm.migrate", 1, a["id"], "a", host["id"])  # pending: the domain may be moving
    inv.vm("new", 1, host, state="building")
    beat(core, host)
    assert states(core) == {"a": "running", "new": "building"}
    assert vm_events(core, "vm.missing") == []


def test_vms_of_a_down_host_are_unknown_until_its_heartbeat_reconciles_them(core: Core, inv: Inventory) -> None:
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=60)).isoformat(timespec="seconds")
    host = inv.host("h1", last_seen=old)
    run = inv.vm("run", 1, host)
    off = inv.vm("off", 1, host, state="shutoff")
    inv.vm("gone", 1, host)
    assert hosts.mark_silent_hosts_down(core) == 1
    assert states(core) == {"run": "unknown", "off": "unknown", "gone": "unknown"}
    assert "3 VM(s)" in vm_events(core, "host.down")[0]["detail"]
    beat(core, host, dom(run), dom(off, "shutoff"))  # it is back; 'gone' was lost meanwhile
    assert states(core) == {"run": "running", "off": "shutoff", "gone": "missing"}
    assert core.db.one("SELECT state FROM hosts WHERE id = ?", [host["id"]]) == {"state": "up"}


def test_unmanaged_domains_are_listed_per_host_and_forgotten_when_gone(client: FlaskClient, core: Core,
                                                                      inv: Inventory, auth: dict[str, str],
                                                                      member: dict[str, Any]) -> None:
    h1, h2 = inv.host("h1"), inv.host("h2")
    known = inv.vm("known", 1, h1)
    byhand, other = str(uuid.uuid4()), str(uuid.uuid4())
    beat(core, h1, dom(known), dom(byhand, "shutoff", "byhand"))
    beat(core, h2, dom(other, "running", "other"))
    listed = client.get("/api/v1/unmanaged", headers=auth).get_json()["unmanaged"]
    assert [(u["uuid"], u["name"], u["state"], u["host"]) for u in listed] == [
        (byhand, "byhand", "shutoff", "h1"), (other, "other", "running", "h2")]
    one = client.get("/api/v1/hosts/h1/unmanaged", headers=auth).get_json()["unmanaged"]
    assert [u["uuid"] for u in one] == [byhand]
    assert_error(client.get("/api/v1/unmanaged", headers=member["headers"]), 403)
    assert_error(client.get("/api/v1/hosts/h1/unmanaged", headers=member["headers"]), 403)
    assert_error(client.get("/api/v1/hosts/nope/unmanaged", headers=auth), 404)
    beat(core, h1, dom(known))  # undefined by hand
    assert [u["uuid"] for u in client.get("/api/v1/unmanaged", headers=auth).get_json()["unmanaged"]] == [other]
    assert states(core)["known"] == "running"


def test_host_page_lists_unmanaged_domains_to_admins_and_states_as_badges(client: FlaskClient, core: Core,
                                                                         inv: Inventory,
                                                                         member: dict[str, Any]) -> None:
    from tests.unit.test_web_pages import log_in

    host = inv.host("h1")
    gone = inv.vm("gone", member["id"], host)
    beat(core, host, dom(gone))
    beat(core, host, dom(str(uuid.uuid4()), "shutoff", "byhand"))
    page = log_in(client).get("/hosts/h1").get_data(as_text=True)
    assert "Unmanaged on h1" in page and "byhand" in page
    assert '<span class="badge state-missing">missing</span>' in page
    other = client.application.test_client()
    page = log_in(other, member["username"], "member-pass-1").get("/hosts/h1").get_data(as_text=True)
    assert "byhand" not in page and "Unmanaged" not in page
    assert '<span class="badge state-missing">missing</span>' in page  # members see their own VM's state
