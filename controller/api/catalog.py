"""Images and flavors (networks are in api/networks.py)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from controller import events
from controller.api.common import body, core, require_admin, user
from controller.errors import BadRequest, Conflict
from controller.ops import images

bp = Blueprint("api_catalog", __name__)


@bp.get("/images")
def list_images() -> Any:
    """List images."""
    return jsonify({"images": core().db.all("SELECT * FROM images ORDER BY name")})


@bp.post("/images")
def import_image() -> Any:
    """Admin: import an image from a path on the controller; answers 202 with the task."""
    require_admin()
    return jsonify({"task": images.import_image(core(), body(), user())}), 202


@bp.post("/images/upload")
def upload_image() -> Any:
    """Admin: upload an image as the raw request body (name, format, os, cloud_init in the query); 201."""
    require_admin()
    image = images.upload_image(core(), request.args.to_dict(), request.stream, request.content_length, user())
    return jsonify({"image": image}), 201


@bp.get("/flavors")
def list_flavors() -> Any:
    """List flavors."""
    return jsonify({"flavors": core().db.all("SELECT * FROM flavors ORDER BY memory_mib, name")})


@bp.post("/flavors")
def create_flavor() -> Any:
    """Admin: create a flavor {name, vcpus, memory_mib, disk_gib}."""
    u = require_admin()
    data = body()
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest("'name' is required")
    values = []
    for key in ("vcpus", "memory_mib", "disk_gib"):
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise BadRequest(f"'{key}' must be a positive integer")
        values.append(value)
    c = core()
    with c.db.write() as w:
        if c.db.one("SELECT 1 FROM flavors WHERE name = ?", [name]):
            raise Conflict(f"a flavor named {name!r} exists already")
        cur = w.execute("INSERT INTO flavors (name, vcpus, memory_mib, disk_gib) VALUES (?, ?, ?, ?)",
                        [name, *values])
        events.record(c.db, "flavor.create", "flavor", name, "ok", "", u["username"])
    return jsonify({"flavor": c.db.one("SELECT * FROM flavors WHERE id = ?", [cur.lastrowid])}), 201
