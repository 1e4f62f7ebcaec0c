"""POST /api/v1/images/upload: the body streamed to disk, checked with qemu-img, checksummed, stored as qcow2."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from controller.core import Core
from tests.conftest import Inventory, assert_error


def qemu_img(tmp_path: Path, name: str, fmt: str, size: str = "16M", *extra: str) -> Path:
    """Make a small disk image with qemu-img create."""
    path = tmp_path / name
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *extra, str(path), size], check=True)
    return path


def upload(client: FlaskClient, headers: dict[str, str], data: bytes, **params: str) -> Any:
    """Send an image as the raw request body."""
    return client.post("/api/v1/images/upload", query_string=params, data=data,
                       headers={**headers, "Content-Type": "application/octet-stream"})


def test_qcow2_upload_is_stored_with_its_checksum(client: FlaskClient, core: Core, auth: dict[str, str],
                                                  tmp_path: Path) -> None:
    data = qemu_img(tmp_path, "small.qcow2", "qcow2").read_bytes()
    resp = upload(client, auth, data, name="tiny", format="qcow2", os="none", cloud_init="0")
    assert resp.status_code == 201, resp.get_json()
    image = resp.get_json()["image"]
    sha = hashlib.sha256(data).hexdigest()
    assert image["name"] == "tiny" and image["state"] == "available" and image["sha256"] == sha
    assert image["size_bytes"] == len(data) and image["virtual_size_bytes"] == 16 * 1024**2
    assert image["cloud_init"] == 0 and image["os"] == "none"
    assert (core.config.image_dir / f"{sha}.qcow2").read_bytes() == data
    assert [p.name for p in core.config.image_dir.iterdir()] == [f"{sha}.qcow2"]  # no partial file left
    assert_error(upload(client, auth, data, name="tiny", format="qcow2"), 409, "conflict")


def test_raw_upload_is_converted_to_qcow2(client: FlaskClient, core: Core, auth: dict[str, str],
                                          tmp_path: Path) -> None:
    data = qemu_img(tmp_path, "disk.raw", "raw", "4M").read_bytes()
    resp = upload(client, auth, data, name="rawdisk", format="raw")
    assert resp.status_code == 201, resp.get_json()
    image = resp.get_json()["image"]
    stored = core.config.image_dir / f"{image['sha256']}.qcow2"
    assert stored.read_bytes()[:4] == b"QFI\xfb"  # qcow2 magic
    assert image["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()
    assert image["source_format"] == "raw" and image["virtual_size_bytes"] == 4 * 1024**2


@pytest.mark.parametrize(("case", "params", "status", "says"), [
    ("wrong format", {"name": "x", "format": "raw"}, 400, "is qcow2, not raw"),
    ("unknown format", {"name": "x", "format": "vdi"}, 400, "'format' must be one of qcow2, raw"),
    ("no name", {"format": "qcow2"}, 400, "'name' is required"),
])
def test_bad_uploads_store_nothing(client: FlaskClient, core: Core, inv: Inventory, auth: dict[str, str],
                                   tmp_path: Path, case: str, params: dict[str, str], status: int, says: str) -> None:
    data = qemu_img(tmp_path, "small.qcow2", "qcow2").read_bytes()
    err = assert_error(upload(client, auth, data, **params), status)
    assert says in err["message"], err
    assert inv.count("images") == 0
    assert list(core.config.image_dir.iterdir()) == []


def test_qcow2_with_a_backing_file_is_refused(client: FlaskClient, core: Core, auth: dict[str, str],
                                              tmp_path: Path) -> None:
    base = qemu_img(tmp_path, "base.qcow2", "qcow2")
    data = qemu_img(tmp_path, "overlay.qcow2", "qcow2", "16M", "-b", str(base), "-F", "qcow2").read_bytes()
    err = assert_error(upload(client, auth, data, name="evil", format="qcow2"), 400)
    assert "refers to other files" in err["message"]
    assert list(core.config.image_dir.iterdir()) == []


def test_upload_size_limit_and_admin_only(client: FlaskClient, core: Core, auth: dict[str, str],
                                          member: dict[str, Any], tmp_path: Path) -> None:
    data = qemu_img(tmp_path, "small.qcow2", "qcow2").read_bytes()
    assert_error(upload(client, member["headers"], data, name="m", format="qcow2"), 403)
    core.config.image_upload_max_bytes = len(data) - 1
    err = assert_error(upload(client, auth, data, name="big", format="qcow2"), 413, "too_large")
    assert "limited to" in err["message"]
    assert list(core.config.image_dir.iterdir()) == []


def test_uploads_may_exceed_the_json_body_limit(client: FlaskClient, core: Core, auth: dict[str, str]) -> None:
    """The app refuses JSON bodies over 64 MiB, but an upload is streamed and has its own limit."""
    assert client.application.config["MAX_CONTENT_LENGTH"] < 80 * 1024**2
    data = b"\0" * (80 * 1024**2)  # a raw disk of zeros
    resp = upload(client, auth, data, name="zeros", format="raw")
    assert resp.status_code == 201, resp.get_json()
