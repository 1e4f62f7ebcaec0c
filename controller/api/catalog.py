"""Images, flavors and networks."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from controller import events, ipam
from controller.api.common import body, core, require_admin, user
from controller.db import now
from controller.errors import BadRequest, Conflict, NotFound
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


def _network(row: dict[str, Any]) -> dict[str, Any]:
    import json

    out = dict(row)
    out["dns"] = json.loads(row["dns"])
    out["range"] = [row["range_start"], row["range_end"]]
    return out


@bp.get("/networks")
def list_networks() -> Any:
    """List networks."""
    return jsonify({"networks": [_network(r) for r in core().db.all("SELECT * FROM networks ORDER BY name")]})


@bp.post("/networks")
def create_network() -> Any:
    """Admin: create a network on an existing bridge with its IP pool."""
    u = require_admin()
    row = ipam.validate_network(body())
    c = core()
    with c.db.write() as w:
        if c.db.one("SELECT 1 FROM networks WHERE name = ?", [row["name"]]):
            raise Conflict(f"a network named {row['name']!r} exists already")
        row["created_at"] = now()
        cols = ", ".join(row)
        cur = w.execute(f"INSERT INTO networks ({cols}) VALUES ({', '.join('?' * len(row))})",  # noqa: S608
                        list(row.values()))
        events.record(c.db, "network.create", "network", row["name"], "ok", row["cidr"], u["username"])
    return jsonify({"network": _network(c.db.one("SELECT * FROM networks WHERE id = ?", [cur.lastrowid]) or {})}), 201


@bp.get("/networks/<ref>/addresses")
def network_addresses(ref: str) -> Any:
    """List the addresses held in a network."""
    c = core()
    net = c.db.one("SELECT * FROM networks WHERE name = ? OR CAST(id AS TEXT) = ?", [ref, ref])
    if net is None:
        raise NotFound(f"network {ref!r} not found")
    return jsonify({"addresses": ipam.allocations(c.db, net["id"])})
