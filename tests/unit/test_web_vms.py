"""The web UI's VM pages: list filters, ownership, the create form's inline errors, actions, destroy."""

from __future__ import annotations

import re
from typing import Any

import pytest

from controller.core import Core
from controller.errors import ApiError, BadRequest, Conflict
from controller.web.vm_create import check_form, field_for
from tests.conftest import Inventory
from tests.unit import test_web_pages as pages
from tests.unit.test_web_pages import Web

admin_web, alice_web, world = pages.admin_web, pages.alice_web, pages.world  # the shared fixtures

WATCHED = ("vms", "vm_nics", "ip_allocations", "tasks")


def rows(inv: Inventory) -> dict[str, int]:
    """Return the row counts a create could change."""
    return {t: inv.count(t) for t in WATCHED}


def vm_names(resp: Any) -> list[str]:
    """Return the VM names listed in the VM table of a page."""
    return re.findall(r'<tr data-vm-id="[^"]+">\s*<th scope="row"><a href="[^"]+">([^<]+)</a>',
                      resp.get_data(as_text=True))


def form(**overrides: str) -> dict[str, str]:
    """Return a valid create form, with overrides."""
    base = {"name": "new1", "image": "debian12", "flavor": "small", "network": "lan", "ip_mode": "auto", "ip": "",
            "host": "", "hostname": "", "ssh_keys": "", "password": "", "user_data": ""}
    return {**base, **overrides}


def error_at(resp: Any, field: str) -> str:
    """Return the inline error shown under a field, checking the field is marked invalid and points at it."""
    html = resp.get_data(as_text=True)
    found = re.search(rf'<p class="field-error" id="{field}-error">([^<]+)</p>', html)
    assert found, f"no error under {field}: {re.findall(r'field-error[^>]*>([^<]+)<', html)}"
    control = re.search(rf'<(?:input|select|textarea) id="{field}"[^>]*>', html)
    assert control and 'aria-invalid="true"' in control.group(0) and f"{field}-error" in control.group(0)
    assert "Nothing was created." in html
    return found.group(1)


def test_list_search_and_filters(admin_web: Web, inv: Inventory, world: dict[str, Any]) -> None:
    inv.vm("db1", 1, world["h1"], state="shutoff")
    assert vm_names(admin_web.get("/vms")) == ["alice-vm", "bob-vm", "db1", "web1"]
    assert vm_names(admin_web.get("/vms?q=10.0.0.6")) == ["alice-vm"]  # by address
    assert vm_names(admin_web.get("/vms?q=bob")) == ["bob-vm"]  # by owner
    assert vm_names(admin_web.get("/vms?state=shutoff")) == ["db1"]
    assert vm_names(admin_web.get("/vms?host=h2")) == []
    assert vm_names(admin_web.get("/vms?q=%25")) == []  # LIKE wildcards are searched for literally
    assert "No VM matches these filters" in admin_web.get("/vms?q=zzz").get_data(as_text=True)


def test_members_see_only_their_own_vms(alice_web: Web) -> None:
    assert vm_names(alice_web.get("/vms")) == ["alice-vm"]
    for path in ("/", "/hosts", "/hosts/h1", "/tasks", "/networks/lan"):
        html = alice_web.get(path).get_data(as_text=True)
        assert "bob-vm" not in html and "web1" not in html, path
    assert "another user's VM" in alice_web.get("/networks/lan").get_data(as_text=True)


@pytest.mark.parametrize("path", ["/vms/{ref}", "/vms/{ref}/destroy", "/vms/{ref}/console"])
def test_members_get_404_for_other_users_vms(alice_web: Web, world: dict[str, Any], path: str) -> None:
    for ref in ("bob-vm", world["vms"]["bob-vm"]["id"], "web1"):
        resp = alice_web.get(path.format(ref=ref))
        assert resp.status_code == 404, (path, ref)
        assert "not found" in resp.get_data(as_text=True)


def test_members_cannot_act_on_other_users_vms(alice_web: Web, core: Core, inv: Inventory) -> None:
    before = rows(inv)
    assert alice_web.post("/vms/bob-vm/actions/poweroff").status_code == 404
    assert alice_web.post("/vms/bob-vm/destroy", {"confirm_name": "bob-vm"}).status_code == 404
    assert rows(inv) == before
    assert core.db.one("SELECT state FROM vms WHERE name = 'bob-vm'") == {"state": "running"}


@pytest.mark.parametrize(("case", "fields", "field", "says"), [
    ("ip outside the network", {"ip_mode": "chosen", "ip": "10.9.9.9"}, "ip", "IP 10.9.9.9 is outside network lan"),
    ("ip taken", {"ip_mode": "chosen", "ip": "10.0.0.40"}, "ip", "already in use on network lan"),
    ("ip not an address", {"ip_mode": "chosen", "ip": "10.0.0.999"}, "ip", "is not an IP address"),
    ("chosen without address", {"ip_mode": "chosen"}, "ip", "Enter the address to give the VM"),
    ("name taken", {"name": "web1"}, "name", "A VM named &#39;web1&#39; exists already; choose another name."),
    ("name invalid", {"name": "Web_1"}, "name", "must be 1-63 lowercase letters"),
    ("no name", {"name": ""}, "name", "Enter a name for the VM"),
    ("no room anywhere", {"flavor": "huge"}, "host", "No host has room for 64 vCPU"),
    ("host in maintenance", {"host": "h2"}, "host", "host h2 is maintenance".capitalize()),
    ("unknown host", {"host": "h7"}, "host", "is not known"),
    ("image importing", {"image": "fresh"}, "image", "wait for its import to finish"),
    ("no flavor", {"flavor": ""}, "flavor", "Choose a flavor."),
    ("bad ssh key", {"ssh_keys": "ssh-ed25519 AAAAC3Nz me@x\nnot a key"}, "ssh_keys", "Line 2 is not an SSH"),
    ("user-data without header", {"user_data": "packages: [htop]"}, "user_data", "must start with &#39;#cloud-config"),
    ("bad hostname", {"hostname": "-x"}, "hostname", "valid host name"),
])
def test_bad_input_shows_an_error_at_its_field_and_creates_nothing(
        admin_web: Web, inv: Inventory, case: str, fields: dict[str, str], field: str, says: str) -> None:
    inv.flavor("huge", 64, 262144, 100)
    inv.image("fresh", state="importing")
    before = rows(inv)
    resp = admin_web.post("/vms/new", form(**fields))
    assert resp.status_code in (400, 409), case
    assert says in error_at(resp, field), case
    assert rows(inv) == before, case
    html = resp.get_data(as_text=True)
    if fields.get("name"):
        assert f'value="{fields["name"]}"' in html  # what was typed stays in the form


def test_the_password_is_not_sent_back(admin_web: Web) -> None:
    resp = admin_web.post("/vms/new", form(name="web1", password="s3cret-pass"))
    assert resp.status_code == 409
    assert "s3cret-pass" not in resp.get_data(as_text=True)


def test_a_valid_form_creates_through_the_operation(admin_web: Web, core: Core, inv: Inventory, wait: Any) -> None:
    resp = admin_web.post("/vms/new", form(name="new1", ip_mode="chosen", ip="10.0.0.150", hostname="box",
                                           ssh_keys="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUnit unit@test\n",
                                           user_data="#cloud-config\npackages: [htop]\n"))
    assert resp.status_code == 302, resp.get_data(as_text=True)
    found = re.match(r"/vms/new1\?task=([0-9a-f-]+)#tasks$", resp.headers["Location"])
    assert found, resp.headers["Location"]
    task = core.tasks.get(found.group(1))
    assert task["kind"] == "vm.create" and task["vm_name"] == "new1"
    vm = core.db.one("SELECT hostname, owner_id FROM vms WHERE name = 'new1'")
    assert vm is None or vm == {"hostname": "box", "owner_id": 1}  # the task may already have been rolled back
    done = wait(task["id"])
    assert done["state"] == "failed" and "agent unreachable" in done["error"]  # the test hosts have no agent
    # The VM's page now shows the failed task instead of a bare 404.
    page = admin_web.get(f"/vms/new1?task={task['id']}")
    assert page.status_code == 404
    html = page.get_data(as_text=True)
    assert "its creation failed and was undone" in html and "agent unreachable" in html


def test_check_form_builds_the_api_body() -> None:
    body, errors = check_form(form(ip_mode="chosen", ip="10.0.0.9", host="h1", password="pw-12345678",
                                   ssh_keys="ssh-rsa AAAAB3 a@b\r\n\r\nssh-ed25519 AAAAC3 c@d"))
    assert errors == {}
    assert body == {"name": "new1", "image": "debian12", "flavor": "small",
                    "networks": [{"network": "lan", "ip": "10.0.0.9"}], "host": "h1", "password": "pw-12345678",
                    "ssh_keys": ["ssh-rsa AAAAB3 a@b", "ssh-ed25519 AAAAC3 c@d"]}
    body, _ = check_form(form(ip="10.0.0.9"))  # typed but 'next free address' chosen: automatic
    assert body["networks"] == [{"network": "lan"}]


@pytest.mark.parametrize(("exc", "field"), [
    (BadRequest("'name' must be 1-63 lowercase letters"), "name"),
    (Conflict("a VM named 'x' exists already; choose another name"), "name"),
    (BadRequest("unknown image 'x'; list them with GET /api/v1/images"), "image"),
    (Conflict("image x is importing; wait for its import to finish"), "image"),
    (BadRequest("unknown flavor 'x'; list them with GET /api/v1/flavors"), "flavor"),
    (BadRequest("unknown network 'x'; list them with GET /api/v1/networks"), "network"),
    (BadRequest("ip 1.2.3.4 is outside network lan (10.0.0.0/24)"), "ip"),
    (Conflict("network lan has no free address in 10.0.0.10-10.0.0.200"), "ip"),
    (Conflict("host 'h7' is not known; list hosts with GET /api/v1/hosts", code="no_such_host"), "host"),
    (Conflict("host h1 has no room for this flavor; choose another host or a smaller flavor"), "host"),
    (Conflict("no host has room for 1 vCPU / 512 MiB", code="no_capacity"), "host"),
    (BadRequest("'ssh_keys' must be a list of public key strings"), "ssh_keys"),
    (BadRequest("'hostname' must be a valid host name label"), "hostname"),
    (ApiError("something else entirely"), ""),
])
def test_operation_errors_map_to_their_field(exc: ApiError, field: str) -> None:
    assert field_for(exc) == field


def test_lifecycle_actions_run_as_tasks_shown_on_the_vm_page(admin_web: Web, core: Core, wait: Any) -> None:
    resp = admin_web.post("/vms/web1/actions/reboot")
    assert resp.status_code == 302
    task_id = re.search(r"task=([0-9a-f-]+)", resp.headers["Location"]).group(1)  # type: ignore[union-attr]
    assert core.tasks.get(task_id)["kind"] == "vm.reboot"
    wait(task_id)
    html = admin_web.get(resp.headers["Location"]).get_data(as_text=True)
    assert f'data-task-id="{task_id}"' in html and "Reboot: task started for web1." in html


def test_an_action_that_cannot_run_says_why(admin_web: Web, core: Core, inv: Inventory,
                                            world: dict[str, Any]) -> None:
    inv.vm("busy1", 1, world["h1"], state="building")
    before = rows(inv)
    resp = admin_web.post("/vms/busy1/actions/start")
    assert resp.status_code == 302
    html = admin_web.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Could not start busy1: VM busy1 is building; wait for that to finish." in html
    assert rows(inv) == before
    assert admin_web.post("/vms/web1/actions/explode").status_code == 404


def test_destroy_confirmation_names_what_is_deleted(admin_web: Web, world: dict[str, Any]) -> None:
    html = admin_web.get("/vms/web1/destroy").get_data(as_text=True)
    vm = world["vms"]["web1"]
    for part in ("the libvirt domain <code>web1</code>", vm["id"], "on host h1", "root disk", "qcow2 overlay",
                 "cloud-init seed", "10.0.0.40 on lan", "This cannot be undone"):
        assert part in html, part
    detail = admin_web.get("/vms/web1").get_data(as_text=True)
    assert 'id="destroy-dialog"' in detail and "10.0.0.40 on lan" in detail  # the same list in the dialog


def test_destroy_needs_the_typed_name(admin_web: Web, core: Core, inv: Inventory) -> None:
    before = rows(inv)
    resp = admin_web.post("/vms/web1/destroy", {"confirm_name": "web"})
    assert resp.status_code == 400
    assert "&#39;web&#39; is not this VM&#39;s name; type web1 exactly to confirm." in resp.get_data(as_text=True)
    assert admin_web.post("/vms/web1/destroy", {}).status_code == 400
    assert rows(inv) == before
    assert core.db.one("SELECT state FROM vms WHERE name = 'web1'") == {"state": "running"}


def test_destroy_runs_the_operation(admin_web: Web, core: Core, inv: Inventory, world: dict[str, Any],
                                    wait: Any) -> None:
    inv.vm("tmp1", 1, None, network=world["lan"], ip="10.0.0.90", state="shutoff")  # no host: nothing to undefine
    resp = admin_web.post("/vms/tmp1/destroy", {"confirm_name": "tmp1"})
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/vms?task=")
    task_id = resp.headers["Location"].split("=", 1)[1]
    assert wait(task_id)["state"] == "succeeded"
    assert core.db.one("SELECT 1 FROM vms WHERE name = 'tmp1'") is None
    assert core.db.one("SELECT 1 FROM ip_allocations WHERE address = '10.0.0.90'") is None
    html = admin_web.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Destroying tmp1" in html and f'data-task-id="{task_id}"' in html
