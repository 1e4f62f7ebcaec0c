"""A VM's domain XML: show, replace, history, revert (checked by policy, validated by libvirt)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from controller.api.common import body, core, user
from controller.errors import NotFound
from controller.ops import vms
from controller.ops import xml as ops

bp = Blueprint("api_xml", __name__)


@bp.get("/vms/<ref>/xml")
def get_xml(ref: str) -> Any:
    """Return libvirt's inactive, secure definition of the VM and its latest version number."""
    c = core()
    return jsonify(ops.current(c, vms.find_vm(c, ref, user())))


@bp.put("/vms/<ref>/xml")
def put_xml(ref: str) -> Any:
    """Replace the VM's XML (or, with dry_run, only check it and show the diff)."""
    c = core()
    return jsonify(ops.apply(c, vms.find_vm(c, ref, user()), user(), body()))


@bp.get("/vms/<ref>/xml/history")
def xml_history(ref: str) -> Any:
    """List every version of the VM's XML, newest first, with author, time, diff and source."""
    c = core()
    return jsonify({"history": ops.history(c, vms.find_vm(c, ref, user()))})


@bp.get("/vms/<ref>/xml/history/<version>")
def xml_version(ref: str, version: str) -> Any:
    """Return one version of the VM's XML."""
    c = core()
    vm = vms.find_vm(c, ref, user())
    if not version.isdigit():
        raise NotFound(f"{version!r} is not a version number; list them with GET .../xml/history")
    return jsonify(ops.version(c, vm, int(version)))


@bp.post("/vms/<ref>/xml/revert")
def xml_revert(ref: str) -> Any:
    """Apply an earlier version again, as a new version."""
    c = core()
    return jsonify(ops.revert(c, vms.find_vm(c, ref, user()), user(), body()))
