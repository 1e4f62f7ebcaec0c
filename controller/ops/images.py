"""Image import: convert to qcow2, checksum, keep in the controller's image store."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

from controller import events
from controller.core import Core
from controller.db import now
from controller.errors import ApiError, BadRequest, Conflict
from controller.tasks import TaskContext, TaskFailed

FORMATS = ("qcow2", "raw", "vmdk")
_shared_locks: dict[str, threading.Lock] = {}
_shared_locks_guard = threading.Lock()


def shared_cache_lock(sha256: str) -> threading.Lock:
    """Serialise caching of one image in the shared pool: every host would write the same file."""
    with _shared_locks_guard:
        return _shared_locks.setdefault(sha256, threading.Lock())


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def qemu_img_info(path: Path) -> dict[str, Any]:
    """Return `qemu-img info` as a dict."""
    out = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True, text=True, timeout=60
    )
    info: dict[str, Any] = json.loads(out.stdout)
    return info


def import_image(core: Core, body: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """Import a disk image from a path on the controller, as a task."""
    name, path, fmt = body.get("name"), body.get("path"), body.get("format", "qcow2")
    if not isinstance(name, str) or not name:
        raise BadRequest("'name' is required")
    if not isinstance(path, str) or not path.startswith("/"):
        raise BadRequest("'path' must be an absolute path on the controller (URL import is not supported yet)")
    if fmt not in FORMATS:
        raise BadRequest(f"'format' must be one of {', '.join(FORMATS)}")
    source = Path(path)
    if not source.is_file():
        raise BadRequest(f"{path} is not a readable file on the controller")
    image_id = str(uuid.uuid4())
    with core.db.write() as w:
        if core.db.one("SELECT 1 FROM images WHERE name = ?", [name]):
            raise Conflict(f"an image named {name!r} exists already")
        w.execute(
            "INSERT INTO images (id, name, source_format, sha256, cloud_init, os, state, created_at)"
            " VALUES (?, ?, ?, '', ?, ?, 'importing', ?)",
            [image_id, name, fmt, 1 if body.get("cloud_init", True) else 0, str(body.get("os", "")), now()],
        )
        task_id = core.tasks.create("image.import", user["id"])

    def run(ctx: TaskContext) -> dict[str, Any]:
        tmp = core.config.image_dir / f".{image_id}.partial"
        try:
            ctx.progress(10, f"checking {source}")
            info = qemu_img_info(source)
            if info.get("format") != fmt:
                raise TaskFailed(f"{source} is {info.get('format')}, not {fmt}; give the right 'format'")
            ctx.progress(30, "converting to qcow2" if fmt != "qcow2" else "copying")
            subprocess.run(
                ["qemu-img", "convert", "-f", fmt, "-O", "qcow2", str(source), str(tmp)],
                check=True, capture_output=True, timeout=3600,
            )
            ctx.progress(80, "computing sha256")
            digest = sha256_file(tmp)
            final = core.config.image_dir / f"{digest}.qcow2"
            tmp.replace(final)
            virtual = int(qemu_img_info(final).get("virtual-size", 0))
        except subprocess.CalledProcessError as exc:
            raise TaskFailed(f"qemu-img failed: {exc.stderr.decode(errors='replace').strip()}") from exc
        finally:
            tmp.unlink(missing_ok=True)
        with core.db.write() as w2:
            w2.execute(
                "UPDATE images SET sha256 = ?, size_bytes = ?, virtual_size_bytes = ?, state = 'available'"
                " WHERE id = ?", [digest, final.stat().st_size, virtual, image_id])
        events.record(core.db, "image.import", "image", image_id, "ok", f"name={name} sha256={digest}",
                      user["username"])
        return {"image_id": image_id, "sha256": digest}

    def mark_error() -> None:
        with core.db.write() as w3:
            w3.execute("UPDATE images SET state = 'error' WHERE id = ?", [image_id])

    core.tasks.submit(task_id, run, on_failure=mark_error)
    return core.tasks.get(task_id)


def image_path(core: Core, sha256: str) -> Path | None:
    """Return the stored file of an available image by checksum."""
    if not core.db.one("SELECT 1 FROM images WHERE sha256 = ? AND state = 'available'", [sha256]):
        return None
    path = core.config.image_dir / f"{sha256}.qcow2"
    return path if path.is_file() else None


UPLOAD_FORMATS = ("qcow2", "raw")
UPLOAD_CHUNK = 1 << 20


def _check_uploaded(path: Path, fmt: str) -> dict[str, Any]:
    """Return qemu-img's view of an uploaded file; refuse a wrong format or a qcow2 that points at other files."""
    try:
        info = qemu_img_info(path)
    except subprocess.CalledProcessError as exc:
        raise BadRequest(f"qemu-img cannot read the upload: {exc.stderr.strip()}") from exc
    if info.get("format") != fmt:
        raise BadRequest(f"the uploaded file is {info.get('format')}, not {fmt}; choose the right format")
    data_file = ((info.get("format-specific") or {}).get("data") or {}).get("data-file")
    if info.get("backing-filename") or data_file:
        raise BadRequest("the uploaded qcow2 refers to other files (a backing or data file); upload a standalone "
                         "image (qemu-img convert -O qcow2 makes one)")
    return info


def upload_image(core: Core, params: dict[str, Any], stream: Any, length: int | None,
                 user: dict[str, Any]) -> dict[str, Any]:
    """Store an image streamed in the request body: checked with qemu-img, checksummed, kept as qcow2.

    The body goes to disk in 1 MiB chunks while its SHA-256 is computed, so an upload never sits in
    memory. A raw image is converted to qcow2 afterwards (and checksummed again).
    """
    name, fmt = params.get("name") or "", params.get("format") or "qcow2"
    if not name:
        raise BadRequest("'name' is required")
    if fmt not in UPLOAD_FORMATS:
        raise BadRequest(f"'format' must be one of {', '.join(UPLOAD_FORMATS)}")
    if length is None:
        raise ApiError("send the image with a Content-Length", code="length_required", status=411)
    limit = core.config.image_upload_max_bytes
    if length > limit:
        raise ApiError(f"the image is {length} bytes; uploads are limited to {limit} bytes "
                       "(LABCLOUD_IMAGE_UPLOAD_MAX_BYTES)", code="too_large", status=413)
    if core.db.one("SELECT 1 FROM images WHERE name = ?", [name]):
        raise Conflict(f"an image named {name!r} exists already")
    image_id = str(uuid.uuid4())
    part = core.config.image_dir / f".{image_id}.upload"
    converted = core.config.image_dir / f".{image_id}.partial"
    try:
        digest, received = hashlib.sha256(), 0
        with part.open("wb") as out:
            while received < length:
                chunk = stream.read(min(UPLOAD_CHUNK, length - received))
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
        if received != length:
            raise BadRequest(f"the upload ended after {received} of {length} bytes; try again")
        _check_uploaded(part, fmt)
        if fmt == "qcow2":
            sha, stored = digest.hexdigest(), part
        else:
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(part), str(converted)],
                           check=True, capture_output=True, timeout=3600)
            sha, stored = sha256_file(converted), converted
        final = core.config.image_dir / f"{sha}.qcow2"
        stored.replace(final)
        virtual = int(qemu_img_info(final).get("virtual-size", 0))
        with core.db.write() as w:
            if core.db.one("SELECT 1 FROM images WHERE name = ?", [name]):
                raise Conflict(f"an image named {name!r} exists already")
            w.execute(
                "INSERT INTO images (id, name, source_format, sha256, size_bytes, virtual_size_bytes, cloud_init, os,"
                " state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'available', ?)",
                [image_id, name, fmt, sha, final.stat().st_size, virtual,
                 0 if str(params.get("cloud_init", "1")) in ("0", "false") else 1, str(params.get("os", "")), now()])
            events.record(core.db, "image.upload", "image", image_id, "ok",
                          f"name={name} sha256={sha} bytes={length}", user["username"])
    except subprocess.CalledProcessError as exc:
        raise BadRequest(f"qemu-img failed: {exc.stderr.decode(errors='replace').strip()}") from exc
    finally:
        part.unlink(missing_ok=True)
        converted.unlink(missing_ok=True)
    row = core.db.one("SELECT * FROM images WHERE id = ?", [image_id])
    return dict(row or {})
