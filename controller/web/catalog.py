"""Images (list, import) and networks (list, create, allocations)."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for

from controller import views
from controller.errors import ApiError, NotFound
from controller.ops import images as image_ops
from controller.web.common import core, current_user, db, require_admin, sentence

bp = Blueprint("catalog", __name__)

IMAGE_ERROR_FIELDS = (("name", re.compile(r"^'name'|^an image named")),
                      ("path", re.compile(r"'path'|not a readable file")),
                      ("format", re.compile(r"'format'")))


def _images_page(values: dict[str, str], errors: dict[str, str], status: int = 200) -> Any:
    d = db()
    task_id = request.args.get("task")
    task = views.task_for_user(d, task_id, current_user()) if task_id else None
    return render_template("images.html", images=views.images(d), values=values, errors=errors,
                           formats=image_ops.FORMATS, upload_formats=image_ops.UPLOAD_FORMATS,
                           upload_max_gib=core().config.image_upload_max_bytes / 1024**3, task=task), status


@bp.get("/images")
def images() -> Any:
    """List images; admins also get the import form."""
    return _images_page({"name": "", "path": "", "format": "qcow2", "os": "", "cloud_init": "1"}, {})


@bp.post("/images")
def import_image() -> Any:
    """Admin: import an image from a file on the controller, as a task."""
    user = require_admin()
    values = {k: request.form.get(k, "").strip() for k in ("name", "path", "format", "os")}
    values["cloud_init"] = "1" if request.form.get("cloud_init") else ""
    body = {"name": values["name"], "path": values["path"], "format": values["format"] or "qcow2",
            "os": values["os"], "cloud_init": bool(values["cloud_init"])}
    try:
        task = image_ops.import_image(core(), body, user)
    except ApiError as exc:
        field = next((f for f, p in IMAGE_ERROR_FIELDS if p.search(exc.message)), "")
        return _images_page(values, {field: sentence(exc.message)}, exc.status)
    flash(f"Importing {values['name']}: it is listed as importing until the task below finishes.", "info")
    return redirect(url_for("web.catalog.images", task=task["id"]))


@bp.get("/networks")
def networks() -> Any:
    """List networks with their pools; admins also get the create form."""
    return render_template("networks.html", networks=views.networks(db()))


@bp.get("/networks/<ref>")
def network(ref: str) -> Any:
    """Show one network and the addresses held in it."""
    d = db()
    row = views.find_network(d, ref)
    if row is None:
        raise NotFound(f"network {ref!r} not found")
    net = next(n for n in views.networks(d) if n["id"] == row["id"])
    return render_template("network.html", net=net,
                           allocations=views.network_allocations(d, row["id"], current_user()))
