"""In a real browser: members see only their own VMs (pages and direct URLs); CSRF protects every change."""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Controller, login, ready
from tests.conftest import MEMBER_PASSWORD

pytestmark = pytest.mark.browser

FETCH = """async ([method, url, headers, body]) => {
  const r = await fetch(url, {method, headers, body, credentials: 'same-origin'});
  return {status: r.status, text: await r.text()};
}"""


def csrf(page: Any) -> str:
    """Return the page's CSRF token."""
    return str(page.locator("meta[name=csrf-token]").get_attribute("content"))


def test_member_sees_only_their_own_vms(page: Any, controller: Controller) -> None:
    login(page, "alice", MEMBER_PASSWORD)
    assert "alice-vm" in page.content()
    assert "bob-vm" not in page.content()
    for path in ("/vms", "/hosts", "/tasks", "/networks/lan"):
        page.goto(path)
        ready(page)
        text = page.locator("main").inner_text()
        assert "bob-vm" not in text and "web1" not in text, path
    page.goto("/vms")
    assert page.locator("tr[data-vm-id] th").all_inner_texts() == ["alice-vm"]


@pytest.mark.parametrize("path", ["/vms/bob-vm", "/vms/bob-vm/destroy", "/vms/bob-vm/console", "/vms/web1"])
def test_member_gets_404_for_another_users_vm_by_direct_url(page: Any, controller: Controller, path: str) -> None:
    login(page, "alice", MEMBER_PASSWORD)
    response = page.goto(path)
    assert response is not None and response.status == 404
    assert page.title() == "Not found · labcloud"
    assert "not found" in page.get_by_role("alert").inner_text()
    # By id as well as by name.
    vm_id = controller.vm_id(path.split("/")[2])
    response = page.goto(f"/vms/{vm_id}")
    assert response is not None and response.status == 404


def test_member_cannot_act_on_another_users_vm(page: Any, controller: Controller) -> None:
    login(page, "alice", MEMBER_PASSWORD)
    page.goto("/vms/alice-vm")
    ready(page)
    token = csrf(page)
    tasks = controller.inv.count("tasks")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for url in ("/vms/bob-vm/actions/poweroff", "/vms/bob-vm/destroy"):
        out = page.evaluate(FETCH, ["POST", url, form, f"csrf_token={token}&confirm_name=bob-vm"])
        assert out["status"] == 404, (url, out)
    api = {"Content-Type": "application/json", "X-CSRFToken": token}
    assert page.evaluate(FETCH, ["POST", "/api/v1/vms/bob-vm/poweroff", api, "{}"])["status"] == 404
    assert page.evaluate(FETCH, ["DELETE", "/api/v1/vms/bob-vm", api, None])["status"] == 404
    assert page.evaluate(FETCH, ["GET", "/api/v1/vms/bob-vm", {}, None])["status"] == 404
    assert controller.inv.count("tasks") == tasks
    assert controller.db.one("SELECT state FROM vms WHERE name = 'bob-vm'") == {"state": "running"}


def test_member_cannot_open_admin_pages(page: Any) -> None:
    login(page, "alice", MEMBER_PASSWORD)
    for path in ("/users", "/events"):
        response = page.goto(path)
        assert response is not None and response.status == 403, path
        assert "admin role" in page.get_by_role("alert").inner_text()
    assert page.get_by_role("link", name="Users").count() == 0  # not offered in the menu either


def test_state_changing_requests_without_csrf_token_are_refused(page: Any, controller: Controller) -> None:
    login(page)
    page.goto("/vms/web1")
    ready(page)
    before = {t: controller.inv.count(t) for t in ("tasks", "flavors", "users", "events")}
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    out = page.evaluate(FETCH, ["POST", "/vms/web1/actions/poweroff", form, ""])
    assert out["status"] == 400 and "CSRF token is missing" in out["text"]
    out = page.evaluate(FETCH, ["POST", "/vms/web1/destroy", form, "confirm_name=web1&csrf_token=forged"])
    assert out["status"] == 400 and "CSRF token is invalid" in out["text"]
    out = page.evaluate(FETCH, ["POST", "/users", form, "username=eve&password=eve-pass-1&password2=eve-pass-1"])
    assert out["status"] == 400
    out = page.evaluate(FETCH, ["POST", "/api/v1/flavors", {"Content-Type": "application/json"},
                                '{"name": "x", "vcpus": 1, "memory_mib": 64, "disk_gib": 1}'])
    assert out["status"] == 400 and '"code":"csrf"' in out["text"].replace(" ", "")
    after = {t: controller.inv.count(t) for t in ("tasks", "flavors", "users", "events")}
    assert after == before
    assert controller.db.one("SELECT state FROM vms WHERE name = 'web1'") == {"state": "running"}


def test_logging_out_ends_the_session(page: Any) -> None:
    login(page)
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login")
    page.goto("/vms")
    assert "/login" in page.url
