"""Migration and maintenance requests that cannot work are refused up front, changing nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import Inventory, assert_error


@pytest.fixture
def two_hosts(inv: Inventory, core: Any) -> dict[str, Any]:
    shared = json.dumps({"shared_pool": True})
    h1 = inv.host("h1", facts=shared)
    h2 = inv.host("h2", facts=shared)
    admin = core.db.one("SELECT id FROM users WHERE username = 'admin'")
    vm = inv.vm("web1", admin["id"], h1)
    return {"h1": h1, "h2": h2, "vm": vm}


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"host": "h1"}, 409, "already runs on h1"),
    ({"host": "nowhere"}, 409, "not known"),
    ({"live": "yes"}, 400, "'live'"),
    ({"timeout": 1}, 400, "'timeout'"),
    ({"bandwidth_mib": 0}, 400, "'bandwidth_mib'"),
    ({"host": 7}, 400, "'host'"),
])
def test_bad_migration_requests(client: FlaskClient, auth: dict[str, str], inv: Inventory, two_hosts: Any,
                                body: dict[str, Any], status: int, words: str) -> None:
    before = inv.counts()
    err = assert_error(client.post("/api/v1/vms/web1/migrate", json=body, headers=auth), status)
    assert words in err["message"], err
    assert inv.counts() == before


def test_destination_in_maintenance_or_down_is_refused(client: FlaskClient, auth: dict[str, str], inv: Inventory,
                                                       core: Any, two_hosts: Any) -> None:
    for state in ("maintenance", "down"):
        with core.db.write() as w:
            w.execute("UPDATE hosts SET state = ? WHERE name = 'h2'", [state])
        err = assert_error(client.post("/api/v1/vms/web1/migrate", json={"host": "h2"}, headers=auth), 409)
        assert f"h2 is {state}" in err["message"]
        err = assert_error(client.post("/api/v1/vms/web1/migrate", json={}, headers=auth), 409)
        assert "no other host is up" in err["message"]


def test_shared_vm_needs_a_shared_pool_on_the_destination(client: FlaskClient, auth: dict[str, str],
                                                          inv: Inventory, core: Any, two_hosts: Any) -> None:
    with core.db.write() as w:
        w.execute("UPDATE vms SET storage = 'shared' WHERE name = 'web1'")
        w.execute("UPDATE hosts SET facts = '{}' WHERE name = 'h2'")
    err = assert_error(client.post("/api/v1/vms/web1/migrate", json={"host": "h2"}, headers=auth), 409)
    assert "no shared storage pool" in err["message"]


def test_vm_in_wrong_state_or_busy_is_refused(client: FlaskClient, auth: dict[str, str], core: Any,
                                              two_hosts: Any) -> None:
    with core.db.write() as w:
        w.execute("UPDATE vms SET state = 'paused' WHERE name = 'web1'")
    err = assert_error(client.post("/api/v1/vms/web1/migrate", json={}, headers=auth), 409)
    assert "only running (live) or stopped (offline)" in err["message"]


def test_cancel_only_for_running_migrations(client: FlaskClient, auth: dict[str, str], core: Any) -> None:
    task_id = core.tasks.create("vm.start", None)
    err = assert_error(client.post(f"/api/v1/tasks/{task_id}/cancel", headers=auth), 409)
    assert "only running migrations" in err["message"]
    assert_error(client.post("/api/v1/tasks/no-such-task/cancel", headers=auth), 404)


def test_maintenance_requests(client: FlaskClient, auth: dict[str, str], inv: Inventory, core: Any,
                              member: dict[str, Any]) -> None:
    inv.host("h1")
    inv.host("h3", state="down")
    assert_error(client.post("/api/v1/hosts/h1/maintenance", json={"enabled": "yes"}, headers=auth), 400)
    assert_error(client.post("/api/v1/hosts/h3/maintenance", json={"enabled": True}, headers=auth), 409)
    assert_error(client.post("/api/v1/hosts/h1/maintenance", json={"enabled": True},
                             headers={"Authorization": f"Bearer {member['token']}"}), 403)
    # An empty host drains at once; while in maintenance the scheduler skips it.
    resp = client.post("/api/v1/hosts/h1/maintenance", json={"enabled": True}, headers=auth)
    assert resp.status_code == 202
    assert client.get("/api/v1/hosts/h1", headers=auth).get_json()["host"]["state"] == "maintenance"
    resp = client.post("/api/v1/hosts/h1/maintenance", json={"enabled": False}, headers=auth)
    assert resp.status_code == 200
    assert client.get("/api/v1/hosts/h1", headers=auth).get_json()["host"]["state"] == "up"
