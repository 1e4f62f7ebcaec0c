"""The web UI's other pages: dashboard, hosts, tasks, events, users, images, networks; the page queries."""

from __future__ import annotations

import re
from typing import Any

from controller import views
from controller.core import Core
from controller.web.common import safe_next, sentence
from tests.conftest import Inventory
from tests.unit import test_web_pages as pages
from tests.unit.test_web_pages import Web

admin_web, alice_web, world = pages.admin_web, pages.alice_web, pages.world  # the shared fixtures


def test_dashboard_counts_vms_by_state_and_shows_host_usage(admin_web: Web, inv: Inventory,
                                                           world: dict[str, Any]) -> None:
    inv.vm("db1", 1, world["h1"], state="shutoff", memory_mib=4096, vcpus=2)
    html = admin_web.get("/").get_data(as_text=True)
    assert re.search(r'<span class="count">3</span> <span class="badge state-running">running</span>', html)
    assert re.search(r'<span class="count">1</span> <span class="badge state-shutoff">shutoff</span>', html)
    # h1: 8 vCPU x 4.0 = 32 allocatable, 5 given; 16384 MiB, 5632 given (34%).
    assert "5 / 32 allocated" in html and "5632 / 16384 MiB allocated" in html and "(34%)" in html
    assert re.search(r'<meter id="ram-[^"]+" aria-labelledby="ram-[^"]+-label" min="0" max="100" low="70" high="90"'
                     r' optimum="0" value="34">', html)


def test_dashboard_lists_recent_failures_with_their_error(admin_web: Web, core: Core) -> None:
    task_id = core.tasks.create("vm.shutdown", 1, None, "web1")
    core.tasks._finish(task_id, "failed", error="the guest did not shut down within 120 s; use poweroff")
    html = admin_web.get("/").get_data(as_text=True)
    assert "Recent failures" in html and "the guest did not shut down within 120 s; use poweroff" in html


def test_members_dashboard_counts_only_their_vms(alice_web: Web) -> None:
    html = alice_web.get("/").get_data(as_text=True)
    assert "(1 of yours)" in html
    assert re.search(r'<span class="count">1</span>', html)


def test_hosts_page_shows_state_capacity_vms_and_the_maintenance_switch(admin_web: Web, alice_web: Web) -> None:
    html = admin_web.get("/hosts").get_data(as_text=True)
    assert "badge state-maintenance" in html and "Enter maintenance" in html and "Leave maintenance" in html
    assert 'data-enable="true"' in html
    for name in ("web1", "alice-vm", "bob-vm"):
        assert f">{name}</a>" in html
    assert "maint-toggle" not in alice_web.get("/hosts").get_data(as_text=True)  # admins only


def test_tasks_page_filters_by_state_and_hides_other_users_tasks(admin_web: Web, alice_web: Web, core: Core,
                                                                 world: dict[str, Any]) -> None:
    bob_task = core.tasks.create("vm.reboot", world["bob"]["id"], world["vms"]["bob-vm"]["id"], "bob-vm")
    core.tasks._finish(bob_task, "succeeded", result={"state": "running"})
    failed = core.tasks.create("vm.start", 1, world["vms"]["web1"]["id"], "web1")
    core.tasks._finish(failed, "failed", error="boom; retry")
    html = admin_web.get("/tasks?state=failed").get_data(as_text=True)
    assert failed in html and bob_task not in html
    assert bob_task in admin_web.get("/tasks").get_data(as_text=True)
    assert bob_task not in alice_web.get("/tasks").get_data(as_text=True)
    assert alice_web.get(f"/tasks/{bob_task}").status_code == 404
    detail = admin_web.get(f"/tasks/{bob_task}")
    assert detail.status_code == 200
    text = detail.get_data(as_text=True)
    assert "Task vm.reboot of bob-vm" in text, text
    assert "running" in text.split("task-result")[1][:200], text


def test_events_page_shows_the_audit_log(admin_web: Web) -> None:
    html = admin_web.get("/events").get_data(as_text=True)
    assert "auth.login" in html and "badge result-ok" in html


def test_admin_creates_users(admin_web: Web, core: Core) -> None:
    resp = admin_web.post("/users", {"username": "carol", "password": "short", "password2": "short"})
    assert resp.status_code == 400 and "at least 8 characters" in resp.get_data(as_text=True)
    resp = admin_web.post("/users", {"username": "carol", "password": "carol-pass-1", "password2": "carol-pass-2"})
    assert resp.status_code == 400 and "The two passwords differ" in resp.get_data(as_text=True)
    resp = admin_web.post("/users", {"username": "alice", "password": "alice-pass-9", "password2": "alice-pass-9"})
    assert resp.status_code == 409 and "User &#39;alice&#39; exists already." in resp.get_data(as_text=True)
    assert core.db.one("SELECT 1 FROM users WHERE username = 'carol'") is None
    resp = admin_web.post("/users", {"username": "carol", "password": "carol-pass-1", "password2": "carol-pass-1",
                                     "role": "admin"})
    assert resp.status_code == 302
    assert core.db.one("SELECT role FROM users WHERE username = 'carol'") == {"role": "admin"}
    assert core.db.one("SELECT username FROM events WHERE action = 'user.create' AND object_id = 'carol'") == {
        "username": "admin"}
    html = admin_web.get("/users").get_data(as_text=True)
    assert "Created admin carol." in html and "carol-pass-1" not in html


def test_image_import_shows_errors_at_their_field(admin_web: Web, alice_web: Web, core: Core, tmp_path: Any) -> None:
    resp = admin_web.post("/images", {"name": "alpine", "path": "alpine.qcow2", "format": "qcow2"})
    assert resp.status_code == 400
    assert re.search(r'id="path-error">[^<]*must be an absolute path', resp.get_data(as_text=True))
    resp = admin_web.post("/images", {"name": "alpine", "path": str(tmp_path / "missing.raw"), "format": "raw"})
    assert re.search(r'id="path-error">[^<]*is not a readable file', resp.get_data(as_text=True))
    resp = admin_web.post("/images", {"name": "debian12", "path": "/etc/hostname", "format": "qcow2"})
    assert resp.status_code == 409 and 'id="name-error"' in resp.get_data(as_text=True)
    assert alice_web.post("/images", {"name": "x", "path": "/etc/hostname"}).status_code == 403
    assert core.db.one("SELECT COUNT(*) AS n FROM images") == {"n": 1}
    assert "Import an image" not in alice_web.get("/images").get_data(as_text=True)


def test_networks_page_shows_pool_use(admin_web: Web) -> None:
    html = admin_web.get("/networks").get_data(as_text=True)
    # 10.0.0.10-10.0.0.200 is 191 addresses; 3 held.
    assert ">3 of 191</a>" in html and 'id="network-form"' in html and 'data-api="/api/v1/networks"' in html
    detail = admin_web.get("/networks/lan").get_data(as_text=True)
    assert "10.0.0.40" in detail and ">web1</a>" in detail


def test_views_vm_summaries_match_the_apis_detail(core: Core, world: dict[str, Any]) -> None:
    from controller.ops.vms import detail

    admin = {"id": 1, "role": "admin"}
    for row in views.vm_summaries(core.db, admin):
        api = detail(core, core.db.one("SELECT * FROM vms WHERE id = ?", [row["id"]]) or {})
        assert (row["name"], row["state"], row["owner"], row["ips"], row["host_name"]) == (
            api["name"], api["state"], api["owner"], api["ips"], api["host"]["name"] if api["host"] else None)


def test_views_pool_size_leaves_out_the_gateway(inv: Inventory, core: Core) -> None:
    inv.network("tiny", cidr="10.5.0.0/29", range_=("10.5.0.1", "10.5.0.6"), gateway="10.5.0.1")
    tiny = next(n for n in views.networks(core.db) if n["name"] == "tiny")
    assert tiny["size"] == 5


def test_safe_next_and_sentence() -> None:
    assert safe_next("/vms?state=running", "/") == "/vms?state=running"
    for bad in ("https://x.example/", "//x.example", "javascript:alert(1)", "vms", "/\\x.example", None, ""):
        assert safe_next(bad, "/") == "/"
    assert sentence("ip 10.0.0.1 is taken") == "IP 10.0.0.1 is taken."
    assert sentence("host h1 is down; choose another host.") == "Host h1 is down; choose another host."
