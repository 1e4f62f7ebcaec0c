"""In a real browser against the lab cloud: create, watch, console, migrate and destroy one real VM.

Uses the session's lab cloud (tests/labcloud.py), so with tests/lab in the same run the lab comes up once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from lab.cloud import Api, LabCloud
from tests.browser.conftest import SCREENSHOTS, distinct_pixel_bytes, launch_chromium, login, new_page, ready
from tests.labcloud import wait_guest_agent

pytestmark = [pytest.mark.lab, pytest.mark.browser]

NAME, PASSWORD = "uivm1", "labcloud-test-pw"

# Reads noVNC's canvas: its size, how many pixels are lit, and a cheap fingerprint of what is drawn.
CANVAS_STATS = """() => {
  const c = document.querySelector('#console-screen canvas');
  if (!c || !c.width || !c.height) return null;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let lit = 0, sum = 0, lastRow = -1;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i] + d[i + 1] + d[i + 2] > 200) {
      lit++; sum = (sum + i) % 1000000007; lastRow = Math.floor(i / 4 / c.width);
    }
  }
  return {width: c.width, height: c.height, lit, sum, lastRow};
}"""

# Records every value the migrate dialog's progress bar takes (tasks.js sets the property, not the attribute).
RECORD_PROGRESS = """() => {
  const bar = document.querySelector('#migrate-dialog progress');
  window.seenProgress = [];
  const note = () => {
    const v = Number(bar.value);
    if (window.seenProgress.at(-1) !== v) window.seenProgress.push(v);
  };
  note();
  window.progressTimer = setInterval(note, 50);
}"""


@pytest.fixture(scope="module")
def lab_browser(playwright: Any, cloud: LabCloud) -> Iterator[Any]:
    """Chromium trusting exactly the lab controller's certificate."""
    chromium = launch_chromium(playwright, cloud.data_dir / "pki" / "server.pem")
    yield chromium
    chromium.close()


def free_address(api: Api, cloud: LabCloud) -> str:
    """Return an address of the lab network's range that no VM holds."""
    taken = {ip for vm in api.call("GET", "/vms", expect=200).json()["vms"] for ip in vm.get("ips", [])}
    first = int(cloud.vm_range[0].rsplit(".", 1)[1])
    prefix = cloud.vm_range[0].rsplit(".", 1)[0]
    return next(f"{prefix}.{n}" for n in range(first + 60, first + 100) if f"{prefix}.{n}" not in taken)


def wait_for_login_screen(page: Any, timeout: float = 300) -> dict[str, Any]:
    """Poll the console's canvas until the login prompt is drawn; return its stats.

    getty clears tty1 and writes two lines at the top ("Debian GNU/Linux 12 NAME tty1", "NAME login:"),
    so the prompt is text in the top half only, after the boot messages that fill the screen, and it
    stays put for 5 s, give or take a few hundred pixels: the text-mode cursor blinks after the prompt.
    """
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        stats = page.evaluate(CANVAS_STATS)
        if stats and stats["lit"] > 500 and stats["lastRow"] < stats["height"] / 2:
            if last is None or abs(stats["lit"] - last["lit"]) > 300 or stats["lastRow"] > last["lastRow"] + 4:
                last, since = stats, time.monotonic()
            elif time.monotonic() - since >= 5:
                return dict(stats)
        time.sleep(0.5)
    page.screenshot(path=str(SCREENSHOTS / "console-timeout.png"))
    raise AssertionError(f"the console did not settle on a drawn screen within {timeout:.0f} s (last: {last})")


def test_create_watch_console_migrate_destroy(lab_browser: Any, cloud: LabCloud, api: Api,
                                              cleanup: list[str]) -> None:
    ip = free_address(api, cloud)
    cleanup.append(NAME)
    context, page = new_page(lab_browser, cloud.url)
    page.set_default_timeout(30_000)
    try:
        login(page, "admin", cloud.admin_password)

        # Create through the form, with a chosen static address.
        page.goto("/vms/new")
        ready(page)
        page.get_by_label("Name", exact=True).fill(NAME)
        page.get_by_label("Image").select_option("debian12")
        page.get_by_label("Flavor").select_option("small")
        page.get_by_label("Network", exact=True).select_option("lab")
        page.get_by_label("This address:").check()
        page.get_by_label("Address", exact=True).fill(ip)
        page.locator("#password").fill(PASSWORD)
        page.get_by_role("button", name="Create VM").click()
        page.wait_for_url(f"**/vms/{NAME}?task=*")
        ready(page)

        # The task reaches succeeded on this page, without a reload.
        loads: list[str] = []
        page.on("load", lambda: loads.append(page.url))
        task = page.locator("#tasks [data-task-id]").first
        expect(task).to_have_attribute("data-task-state", "succeeded", timeout=600_000)
        expect(task.locator(".task-progress")).to_have_js_property("value", 100)
        assert loads == [], f"the page reloaded while the task ran: {loads}"
        expect(page.locator(".facts .vm-ips")).to_contain_text(ip)
        expect(page.locator(".facts .vm-state .badge")).to_have_text("running", timeout=60_000)
        host_before = page.locator(".facts .vm-host a").inner_text()

        # The console draws the guest's screen; wait for its login prompt (the guest agent answering means
        # the guest's userspace is up; getty on tty1 then draws the prompt and the screen settles).
        assert wait_guest_agent(api, NAME, timeout=300) is not None, "the guest agent never answered"
        page.get_by_role("link", name="Console").click()
        ready(page)
        expect(page.locator("#console")).to_have_attribute("data-console", "connected", timeout=60_000)
        stats = wait_for_login_screen(page)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot_path = SCREENSHOTS / "console.png"
        canvas = page.locator("#console-screen canvas").first
        expect(canvas).to_be_visible()  # noVNC scales it to the box: a box without a height hides it
        assert canvas.bounding_box()["height"] > 300, canvas.bounding_box()
        canvas.screenshot(path=str(shot_path))
        assert stats["lit"] > 500 and distinct_pixel_bytes(shot_path.read_bytes()) > 2, f"blank console: {stats}"
        page.screenshot(path=str(SCREENSHOTS / "console-page.png"))

        # Migrate with the dialog; the progress bar is seen between 0 and 100, then at 100.
        page.goto(f"/vms/{NAME}")
        ready(page)
        page.get_by_role("button", name="Migrate…").click()
        dialog = page.locator("#migrate-dialog")
        expect(dialog).to_be_visible()
        target = next(h.name for h in cloud.lab.hosts if h.name != host_before)
        dialog.get_by_label(target).check()
        page.evaluate(RECORD_PROGRESS)
        dialog.get_by_role("button", name="Migrate", exact=True).click()
        expect(dialog.locator(".migrate-progress")).to_be_visible()
        expect(dialog.locator("progress")).to_have_js_property("value", 100, timeout=600_000)
        seen = page.evaluate("() => { clearInterval(window.progressTimer); return window.seenProgress; }")
        print(f"migration progress bar values seen: {seen}")
        assert any(0 < v < 100 for v in seen), f"the progress bar never showed a value between 0 and 100: {seen}"
        assert seen[-1] == 100, seen
        expect(dialog.locator(".form-error")).to_be_hidden()
        page.locator("#migrate-dialog [data-close-dialog]").click()
        expect(page.locator(".facts .vm-host a")).to_have_text(target, timeout=30_000)

        # Destroy through the confirmation; the VM leaves the list.
        page.get_by_role("link", name="Destroy…").click()
        destroy = page.locator("#destroy-dialog")
        expect(destroy).to_be_visible()
        destroy.get_by_label(f"Type {NAME} to confirm").fill(NAME)
        destroy.get_by_role("button", name=f"Destroy {NAME}").click()
        page.wait_for_url("**/vms?task=*")
        ready(page)
        expect(page.locator("section.task-box")).to_have_attribute("data-task-state", "succeeded", timeout=300_000)
        expect(page.locator("tr[data-vm-id]").filter(has_text=NAME)).to_have_count(0, timeout=30_000)
        assert api.call("GET", f"/vms/{NAME}").status_code == 404
    except Exception:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "lab-flow-failure.png"))
        raise
    finally:
        context.close()
