"""In a real browser: uploading an image from the images page, with its progress bar."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import Controller, login, ready, shot

pytestmark = pytest.mark.browser


def test_image_upload_shows_progress_and_lists_the_image(page: Any, controller: Controller, tmp_path: Path) -> None:
    image = tmp_path / "cirros-like.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", str(image), "256M"],
                   check=True)
    login(page)
    page.goto("/images")
    ready(page)
    form = page.locator("#upload-form")
    form.get_by_label("Image file").set_input_files(str(image))
    expect(form.get_by_label("Name of the new image")).to_have_value("cirros-like")  # taken from the file name
    form.get_by_label("Operating system of the upload").fill("cirros")
    form.get_by_role("button", name="Upload").click()
    expect(form).to_have_attribute("data-upload", "done", timeout=60_000)
    expect(page.locator("#up-progress")).to_have_js_property("value", 100)
    assert "Uploaded cirros-like" in page.locator("#up-status").inner_text()
    shot(page, "image-upload", full_page=False)
    expect(page.get_by_role("row").filter(has_text="cirros-like")).to_contain_text("available")  # after the reload
    row = controller.db.one("SELECT * FROM images WHERE name = 'cirros-like'")
    assert row is not None and row["sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    assert (controller.data_dir / "images" / f"{row['sha256']}.qcow2").is_file()
    assert page.console_log.clean(), page.console_log.errors
    with controller.db.write() as w:  # leave the catalog as the other tests expect it
        w.execute("DELETE FROM images WHERE name = 'cirros-like'")


def test_a_wrong_format_is_refused_with_a_readable_error(page: Any, controller: Controller, tmp_path: Path) -> None:
    image = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    login(page)
    page.goto("/images")
    ready(page)
    form = page.locator("#upload-form")
    form.get_by_label("Image file").set_input_files(str(image))
    form.get_by_label("Format of the upload").select_option("raw")
    form.get_by_role("button", name="Upload").click()
    expect(form.locator("#up-error")).to_contain_text("is qcow2, not raw; choose the right format")
    assert controller.db.one("SELECT 1 FROM images WHERE name = 'disk'") is None
