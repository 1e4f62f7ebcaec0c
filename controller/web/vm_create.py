"""The create-VM form: checks what it can, calls the create operation, shows errors at their field."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for

from controller import views
from controller.errors import ApiError
from controller.ops import vms as ops
from controller.web.common import core, current_user, db, sentence

bp = Blueprint("vm_create", __name__)

FIELDS = ("name", "hostname", "image", "flavor", "network", "ip_mode", "ip", "host", "ssh_keys", "password",
          "user_data")
KEY_RE = re.compile(r"^(ssh-(rsa|dss|ed25519)|ecdsa-sha2-\S+|sk-\S+) [A-Za-z0-9+/=]+( .*)?$")

# Which field an operation's error is about: (field, pattern on the message), first match wins.
ERROR_FIELDS = (
    ("host", re.compile(r"^host |^no host has room")),
    ("name", re.compile(r"^'name'|^a VM named")),
    ("hostname", re.compile(r"^'hostname'")),
    ("ip", re.compile(r"^ip |no free address")),
    ("image", re.compile(r"image")),
    ("flavor", re.compile(r"flavor")),
    ("network", re.compile(r"network")),
    ("ssh_keys", re.compile(r"ssh_keys")),
    ("password", re.compile(r"'password'")),
    ("user_data", re.compile(r"'user_data'")),
)


def field_for(exc: ApiError) -> str:
    """Return the form field an operation's error is about ('' for the form as a whole)."""
    if exc.code in ("no_capacity", "no_such_host"):
        return "host"
    for field, pattern in ERROR_FIELDS:
        if pattern.search(exc.message):
            return field
    return ""


def _form_values() -> dict[str, str]:
    values = {f: request.form.get(f, "").strip() for f in FIELDS if f not in ("password", "user_data")}
    values["user_data"] = request.form.get("user_data", "")
    values["password"] = request.form.get("password", "")
    values["ip_mode"] = values["ip_mode"] if values["ip_mode"] in ("auto", "chosen") else "auto"
    return values


def check_form(values: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """Return the API body for the form's values and the errors found before asking the operation."""
    errors: dict[str, str] = {}
    if not values["name"]:
        errors["name"] = "Enter a name for the VM, such as web1."
    for field, what in (("image", "an image"), ("flavor", "a flavor"), ("network", "a network")):
        if not values[field]:
            errors[field] = f"Choose {what}."
    if values["ip_mode"] == "chosen" and not values["ip"]:
        errors["ip"] = "Enter the address to give the VM, or choose 'next free address'."
    keys = [line.strip() for line in values["ssh_keys"].splitlines() if line.strip()]
    bad = [k for k in keys if not KEY_RE.match(k)]
    if bad:
        errors["ssh_keys"] = (f"Line {keys.index(bad[0]) + 1} is not an SSH public key; paste one key per line, "
                              "such as 'ssh-ed25519 AAAA… you@laptop'.")
    user_data = values["user_data"].strip()
    if user_data and not user_data.startswith("#"):
        errors["user_data"] = "User-data must start with '#cloud-config' (or '#!' for a script)."
    network: dict[str, Any] = {"network": values["network"]}
    if values["ip_mode"] == "chosen" and values["ip"]:
        network["ip"] = values["ip"]
    body: dict[str, Any] = {"name": values["name"], "image": values["image"], "flavor": values["flavor"],
                            "networks": [network]}
    if keys:
        body["ssh_keys"] = keys
    for field in ("host", "hostname", "password"):
        if values[field]:
            body[field] = values[field]
    if user_data:
        body["user_data"] = values["user_data"]
    return body, errors


def _render(values: dict[str, str], errors: dict[str, str], status: int = 200) -> Any:
    d = db()
    form_error = errors.pop("", "")
    return render_template(
        "vm_create.html", values=values, errors=errors, form_error=form_error,
        images=views.images(d), flavors=views.flavors(d), networks=views.networks(d),
        hosts=views.host_overview(d, current_user()),
    ), status


@bp.get("/vms/new")
def form() -> Any:
    """Show the create form, preset to the first usable choices."""
    d = db()
    values = dict.fromkeys(FIELDS, "")
    values["ip_mode"] = "auto"
    images = [i for i in views.images(d) if i["state"] == "available"]
    flavors, networks = views.flavors(d), views.networks(d)
    values["image"] = images[0]["name"] if len(images) == 1 else ""
    values["flavor"] = flavors[0]["name"] if len(flavors) == 1 else ""
    values["network"] = networks[0]["name"] if len(networks) == 1 else ""
    return _render(values, {})


@bp.post("/vms/new")
def create() -> Any:
    """Create the VM through the operation; on error, show it next to its field and create nothing."""
    values = _form_values()
    body, errors = check_form(values)
    if errors:
        return _render(values, errors, 400)
    try:
        task = ops.create(core(), body, current_user())
    except ApiError as exc:
        return _render(values, {field_for(exc): sentence(exc.message)}, exc.status)
    flash(f"Creating {values['name']}: its progress shows below.", "info")
    return redirect(url_for("web.vms.detail", ref=values["name"], task=task["id"]) + "#tasks")
