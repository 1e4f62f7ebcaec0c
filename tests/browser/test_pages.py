"""In a real browser: logging in, every page, screenshots, local times, live task progress and VM states."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from controller.db import now
from tests.browser.conftest import Controller, add_task, login, ready, shot

pytestmark = pytest.mark.browser

PAGES = [  # path, title, heading
    ("/", "Dashboard · labcloud", "Dashboard"),
    ("/vms", "VMs · labcloud", "VMs"),
    ("/vms/web1", "VM web1 · labcloud", "VM web1"),
    ("/vms/new", "Create VM · labcloud", "Create VM"),
    ("/vms/web1/destroy", "Destroy web1? · labcloud", "Destroy web1?"),
    ("/hosts", "Hosts · labcloud", "Hosts"),
    ("/hosts/h1", "Host h1 · labcloud", "Host h1"),
    ("/images", "Images · labcloud", "Images"),
    ("/networks", "Networks · labcloud", "Networks"),
    ("/networks/lan", "Network lan · labcloud", "Network lan"),
    ("/tasks", "Tasks · labcloud", "Tasks"),
    ("/events", "Events · labcloud", "Events"),
    ("/users", "Users · labcloud", "Users"),
]


def test_login_page_asks_for_credentials_and_refuses_wrong_ones(page: Any) -> None:
    page.goto("/vms")
    assert "/login" in page.url  # every page needs a session
    assert page.title() == "Log in · labcloud"
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    assert "Wrong username or password" in page.get_by_role("alert").inner_text()
    page.get_by_label("Password").fill("admin-pass-1")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/vms")  # back where the person wanted to go
    assert page.title() == "VMs · labcloud"


@pytest.mark.parametrize(("path", "title", "heading"), PAGES)
def test_page_renders_cleanly(page: Any, controller: Controller, path: str, title: str, heading: str) -> None:
    login(page)
    page.goto(path)
    ready(page)
    assert page.title() == title
    assert page.get_by_role("heading", level=1).inner_text().strip().startswith(heading)
    # No CSP violation, no script error: the page's scripts and styles all come from files.
    assert page.console_log.clean(), page.console_log.errors
    # Times are shown in the browser's time zone (Europe/Berlin here), the UTC value kept in the title.
    for el in page.locator("time[datetime]").all()[:5]:
        assert el.get_attribute("data-local") == "1"
        assert el.inner_text() != el.get_attribute("datetime")
    # Every visible form control has a label.
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                     && !e.getAttribute('aria-labelledby')).map(e => e.name || e.id)""")
    assert unlabelled == []


def test_screenshots_of_the_main_pages(page: Any, controller: Controller) -> None:
    login(page)
    assert page.locator("meter").count() >= 9  # CPU, RAM and disk of three hosts
    shot(page, "dashboard")
    page.goto("/vms")
    ready(page)
    assert page.locator("tr[data-vm-id]").count() == 5
    shot(page, "vm-list")
    page.goto("/vms/web1")
    ready(page)
    assert "10.0.0.40" in page.locator(".vm-ips").first.inner_text()
    shot(page, "vm-detail")
    page.goto("/vms/new")
    ready(page)
    shot(page, "create-form")
    page.goto("/hosts")
    ready(page)
    shot(page, "hosts")


def test_search_and_filters_narrow_the_vm_list(page: Any) -> None:
    login(page)
    page.goto("/vms")
    page.get_by_label("Search").fill("10.0.0.4")
    page.get_by_role("button", name="Filter").click()
    ready(page)
    assert page.locator("tr[data-vm-id] th").all_inner_texts() == ["web1"]
    page.goto("/vms")
    page.get_by_label("State").select_option("shutoff")
    page.get_by_role("button", name="Filter").click()
    ready(page)
    assert page.locator("tr[data-vm-id] th").all_inner_texts() == ["db1"]
    page.get_by_role("link", name="Clear filters").click()
    ready(page)
    assert page.locator("tr[data-vm-id]").count() == 5


def test_vm_state_and_task_progress_update_without_reloading(page: Any, controller: Controller) -> None:
    login(page)
    vm = controller.db.one("SELECT * FROM vms WHERE name = 'web2'")
    assert vm is not None
    task_id = add_task(controller.db, "vm.shutdown", 1, vm, "running", 20, "shutdown on host")
    page.goto("/vms/web2")
    ready(page)
    page.evaluate("window.__sameDocument = true")  # disappears if the page reloads
    row = page.locator(f"tr[data-task-id='{task_id}']")
    assert row.locator(".task-percent").inner_text() == "20%"
    assert page.get_by_role("button", name="Start").is_disabled()

    with controller.db.write() as w:
        w.execute("UPDATE tasks SET progress = 60, message = 'waiting for the guest' WHERE id = ?", [task_id])
    expect(row.locator("progress")).to_have_js_property("value", 60)
    expect(row.locator(".task-message")).to_have_text("waiting for the guest")

    with controller.db.write() as w:
        w.execute("UPDATE tasks SET state = 'succeeded', progress = 100, message = 'done', finished_at = ?"
                  " WHERE id = ?", [now(), task_id])
        w.execute("UPDATE vms SET state = 'shutoff', updated_at = ? WHERE id = ?", [now(), vm["id"]])
    expect(row).to_have_attribute("data-task-state", "succeeded")
    expect(row.locator(".task-state .badge")).to_have_text("succeeded")
    expect(page.locator("h1 .vm-state .badge")).to_have_text("shutoff")
    expect(page.get_by_role("button", name="Start")).to_be_enabled()
    assert page.get_by_role("button", name="Reboot").is_disabled()
    assert page.evaluate("window.__sameDocument") is True
    with controller.db.write() as w:
        w.execute("UPDATE vms SET state = 'running' WHERE id = ?", [vm["id"]])


def test_vm_list_follows_states_without_reloading(page: Any, controller: Controller) -> None:
    login(page)
    page.goto("/vms")
    ready(page)
    page.evaluate("window.__sameDocument = true")
    vm_id = controller.vm_id("db1")
    with controller.db.write() as w:
        w.execute("UPDATE vms SET state = 'running' WHERE id = ?", [vm_id])
    expect(page.locator(f"tr[data-vm-id='{vm_id}'] .vm-state .badge")).to_have_text("running")
    assert page.evaluate("window.__sameDocument") is True
    with controller.db.write() as w:
        w.execute("UPDATE vms SET state = 'shutoff' WHERE id = ?", [vm_id])


def test_keyboard_reaches_the_actions(page: Any) -> None:
    login(page)
    page.goto("/vms/web1")
    ready(page)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(40):  # tab until the destroy link, then open its dialog with Enter and close it with Escape
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "destroy-button":
            break
    else:
        pytest.fail("the Destroy… action cannot be reached with the keyboard")
    page.keyboard.press("Enter")
    dialog = page.locator("#destroy-dialog")
    assert dialog.is_visible()
    assert page.evaluate("document.activeElement.name") == "confirm_name"
    page.keyboard.press("Escape")
    assert not dialog.is_visible()


def test_favicon_and_page_titles_name_the_object(page: Any) -> None:
    login(page)
    page.goto("/hosts/h2")
    assert page.title() == "Host h2 · labcloud"
    icon = page.locator("link[rel=icon]").get_attribute("href")
    assert icon and re.search(r"favicon\.svg$", icon)
    assert page.evaluate("async (url) => (await fetch(url)).status", icon) == 200
