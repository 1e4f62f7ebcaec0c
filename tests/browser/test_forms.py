"""In a real browser: the create form's inline errors, a create followed live, destroy, migrate, maintenance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ROOT, Controller, login, ready, shot

pytestmark = pytest.mark.browser

WATCHED = ("vms", "vm_nics", "ip_allocations", "tasks")


def counts(controller: Controller) -> dict[str, int]:
    """Return the row counts a create could change."""
    return {t: controller.inv.count(t) for t in WATCHED}


def fill_create_form(page: Any, name: str, flavor: str = "small", ip: str | None = None, host: str = "") -> None:
    page.goto("/vms/new")
    ready(page)
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Image").select_option("debian12")
    page.get_by_label("Flavor").select_option(flavor)
    page.get_by_label("Network", exact=True).select_option("lan")
    if ip is not None:
        page.get_by_label("This address:").check()
        page.get_by_label("Address", exact=True).fill(ip)
    if host:
        page.get_by_label("Host", exact=True).select_option(host)


def field_error(page: Any, field: str) -> str:
    """Return the inline error shown under a field (and check the field points at it)."""
    error = page.locator(f"#{field}-error")
    expect(error).to_be_visible()
    control = page.locator(f"#{field}")
    assert control.get_attribute("aria-invalid") == "true"
    assert f"{field}-error" in (control.get_attribute("aria-describedby") or "")
    return str(error.inner_text())


@pytest.mark.parametrize(("case", "kwargs", "field", "says"), [
    ("ip outside the range", {"name": "new1", "ip": "10.9.9.9"}, "ip", "IP 10.9.9.9 is outside network lan"),
    ("ip in use", {"name": "new1", "ip": "10.0.0.40"}, "ip", "already in use"),
    ("duplicate name", {"name": "web1"}, "name", "A VM named 'web1' exists already; choose another name"),
    ("no host with room", {"name": "new1", "flavor": "huge"}, "host", "No host has room for 64 vCPU"),
    ("chosen host without room", {"name": "new1", "flavor": "huge", "host": "h2"}, "host", "has no room"),
])
def test_bad_input_shows_an_inline_error_and_creates_nothing(page: Any, controller: Controller, case: str,
                                                             kwargs: dict[str, Any], field: str, says: str) -> None:
    login(page)
    before = counts(controller)
    fill_create_form(page, **kwargs)
    page.get_by_role("button", name="Create VM").click()
    ready(page)
    assert page.title() == "Create VM · labcloud"
    assert says in field_error(page, field)
    assert "Nothing was created" in page.locator("#error-summary").inner_text()
    assert page.get_by_label("Name", exact=True).input_value() == kwargs["name"]  # what was typed stays
    assert counts(controller) == before
    if case == "ip outside the range":
        shot(page, "create-form-error")


def test_a_create_is_followed_live_to_its_end(page: Any, controller: Controller) -> None:
    """The task runs for real; the hosts' agents are unreachable, so it fails and the VM is rolled back."""
    login(page)
    before = counts(controller)
    fill_create_form(page, "try1", ip="10.0.0.150")
    page.get_by_label("SSH public keys").fill("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBrowserTestKey tester@lab")
    page.get_by_role("button", name="Create VM").click()
    page.wait_for_url("**/vms/try1?task=*")
    ready(page)
    # The VM's page with its task history, or (when the task failed before the page loaded) the task's page.
    task = page.locator("[data-task-id]").first
    expect(task).to_have_attribute("data-task-state", "failed", timeout=30_000)
    expect(task.locator(".task-error")).to_contain_text("agent unreachable")
    expect(task.locator(".task-state .badge")).to_have_text("failed")
    expect(page.get_by_role("alert").filter(has_text="does not exist")).to_be_visible()  # rolled back, and said so
    assert controller.vm_id("try1") is None
    after = counts(controller)
    assert after["tasks"] == before["tasks"] + 1
    assert {k: v for k, v in after.items() if k != "tasks"} == {k: v for k, v in before.items() if k != "tasks"}


def test_destroy_names_what_is_deleted_and_needs_the_name(page: Any, controller: Controller) -> None:
    lan = controller.ids["lan"]
    controller.inv.vm("tmp1", 1, None, network=lan, ip="10.0.0.90", state="shutoff")  # no host: nothing to undefine
    login(page)
    page.goto("/vms/tmp1")
    ready(page)
    page.get_by_role("link", name="Destroy…").click()
    dialog = page.locator("#destroy-dialog")
    expect(dialog).to_be_visible()
    text = dialog.inner_text()
    for part in ("libvirt domain tmp1", "root disk", "qcow2 overlay", "cloud-init seed", "10.0.0.90 on lan"):
        assert part in text, part
    shot(page, "destroy-dialog", full_page=False)
    dialog.get_by_label("Type tmp1 to confirm").fill("tmp")
    dialog.get_by_role("button", name="Destroy tmp1").click()
    ready(page)
    assert "'tmp' is not this VM's name" in page.locator("#confirm-error").inner_text()
    assert controller.vm_id("tmp1") is not None
    page.get_by_label("Type tmp1 to confirm").fill("tmp1")
    page.get_by_role("button", name="Destroy tmp1").click()
    page.wait_for_url("**/vms?task=*")
    ready(page)
    box = page.locator("section.task-box")
    expect(box).to_have_attribute("data-task-state", "succeeded", timeout=20_000)
    expect(box.locator("progress")).to_have_js_property("value", 100)
    assert controller.vm_id("tmp1") is None
    assert controller.db.one("SELECT 1 FROM ip_allocations WHERE address = '10.0.0.90'") is None
    expect(page.locator("tr[data-vm-id]").filter(has_text="tmp1")).to_have_count(0)


def test_migrate_dialog_offers_destinations_and_follows_the_task(page: Any, controller: Controller) -> None:
    """POST /api/v1/vms/{id}/migrate runs for real; the agents are unreachable, so the task fails and says so."""
    controller.inv.vm("mig1", 1, controller.ids["h1"], network=controller.ids["lan"])
    login(page)
    page.goto("/vms/mig1")
    ready(page)
    page.get_by_role("button", name="Migrate…").click()
    dialog = page.locator("#migrate-dialog")
    expect(dialog).to_be_visible()
    assert "migrates live" in dialog.inner_text()
    assert dialog.get_by_label("h2").is_enabled()
    assert dialog.get_by_label("h3").is_disabled()  # in maintenance
    dialog.get_by_label("h2").check()
    dialog.get_by_role("button", name="Migrate", exact=True).click()
    alert = dialog.locator(".form-error")
    expect(alert).to_be_visible(timeout=30_000)
    if dialog.get_attribute("data-migrate") == "unavailable":  # a controller without migration
        assert "Migration is not available on this controller yet" in alert.inner_text()
    else:
        expect(dialog.locator(".migrate-progress")).to_be_visible()
        expect(alert).to_contain_text("The VM stays on its host")
        expect(page.locator("#tasks tr[data-task-id]").first).to_have_attribute("data-task-state", "failed")
    shot(page, "migrate-dialog", full_page=False)
    vm = controller.db.one("SELECT h.name, v.state FROM vms v JOIN hosts h ON h.id = v.host_id WHERE v.name = 'mig1'")
    assert vm is not None and vm["name"] == "h1"
    with controller.db.write() as w:  # leave the inventory as the other tests expect it
        w.execute("DELETE FROM vms WHERE name = 'mig1'")


def test_maintenance_switch_enters_and_leaves_maintenance(page: Any, controller: Controller) -> None:
    host = controller.inv.host("h9", vcpus=4, memory_mib=8192)  # no VM: the drain has nothing to move
    try:
        login(page)
        page.goto("/hosts")
        ready(page)
        page.on("dialog", lambda d: d.accept())
        row = page.locator(f"tr[data-host-id='{host['id']}']")
        row.get_by_role("button", name="Enter maintenance").click()
        status = row.locator(".maint-status")
        if "not available" in status.inner_text():  # a controller without maintenance mode
            return
        expect(row.locator(".host-state .badge")).to_have_text("maintenance")
        expect(row.get_by_role("button", name="Leave maintenance")).to_be_enabled()
        row.get_by_role("button", name="Leave maintenance").click()
        expect(row.locator(".host-state .badge")).to_have_text("up")
        assert controller.db.one("SELECT state FROM hosts WHERE name = 'h9'") == {"state": "up"}
    finally:
        with controller.db.write() as w:
            w.execute("DELETE FROM tasks WHERE host_id = ?", [host["id"]])
            w.execute("DELETE FROM hosts WHERE id = ?", [host["id"]])


def test_console_page_says_when_the_host_does_not_answer(page: Any) -> None:
    """The proxy accepts the session (token and cookie), but web1's host agent is unreachable."""
    login(page)
    page.goto("/vms/web1/console")
    ready(page)
    section = page.locator("#console")
    expect(section).to_have_attribute("data-console", "disconnected" if novnc_installed() else "no-novnc")
    if novnc_installed():
        expect(page.locator("#console-status")).to_contain_text("Check that the VM is running")
        expect(page.get_by_role("button", name="Connect again")).to_be_visible()
    # noVNC scales its canvas to this box; a box with no definite height shows a screen 0 pixels high.
    assert page.locator("#console-screen").bounding_box()["height"] > 300
    assert page.title() == "Console of web1 · labcloud"


def test_console_of_a_stopped_vm_says_to_start_it(page: Any) -> None:
    login(page)
    page.goto("/vms/db1/console")
    ready(page)
    if not novnc_installed():
        return
    expect(page.locator("#console")).to_have_attribute("data-console", "not-running")
    expect(page.locator("#console-status")).to_contain_text("db1 is shutoff; start it, then open its console")


def novnc_installed() -> bool:
    """Say whether scripts/ui-assets has installed noVNC."""
    return Path(ROOT / "static/node_modules/@novnc/novnc/core/rfb.js").is_file()


def test_admin_creates_a_user_and_a_network(page: Any, controller: Controller) -> None:
    login(page)
    page.goto("/users")
    page.get_by_label("User name").fill("carol")
    page.get_by_label("Password", exact=True).fill("carol-pass-1")
    page.get_by_label("Password again").fill("carol-pass-2")
    page.get_by_role("button", name="Create user").click()
    assert "The two passwords differ" in page.locator("#password2-error").inner_text()
    page.get_by_label("Password", exact=True).fill("carol-pass-1")
    page.get_by_label("Password again").fill("carol-pass-1")
    page.get_by_role("button", name="Create user").click()
    expect(page.get_by_role("row", name="carol")).to_be_visible()

    page.goto("/networks")
    ready(page)
    form = page.locator("#network-form")
    form.get_by_label("Name").fill("storage")
    form.get_by_label("Bridge").fill("br1")
    form.get_by_label("CIDR").fill("10.1.0.1/24")
    form.get_by_label("First address of the pool").fill("10.1.0.10")
    form.get_by_label("Last address of the pool").fill("10.1.0.99")
    form.get_by_role("button", name="Create network").click()
    expect(page.locator("#net-cidr-error")).to_contain_text("is not a network address")
    assert controller.db.one("SELECT 1 FROM networks WHERE name = 'storage'") is None
    form.get_by_label("CIDR").fill("10.1.0.0/24")
    form.get_by_role("button", name="Create network").click()
    page.wait_for_url("**/networks/storage")
    assert page.title() == "Network storage · labcloud"


def test_image_import_errors_show_at_their_field(page: Any) -> None:
    login(page)
    page.goto("/images")
    page.get_by_label("Name", exact=True).fill("alpine")
    page.get_by_label("Path on the controller").fill("images/alpine.qcow2")
    page.get_by_role("button", name="Import").click()
    assert "must be an absolute path" in page.locator("#path-error").inner_text()
