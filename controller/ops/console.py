"""Opening a VM's console: a session token for the controller's console proxy."""

from __future__ import annotations

from typing import Any

from controller import events
from controller.console import PATH_PREFIX
from controller.core import Core
from controller.errors import Conflict


def open_console(core: Core, vm: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """Issue a console session for a running VM the user may see (find_vm checked that)."""
    if vm["state"] != "running" or not vm["host_id"]:
        raise Conflict(f"VM {vm['name']} is {vm['state']}; start it, then open its console")
    token, expires = core.consoles.issue(user["id"], vm)
    events.record(core.db, "vm.console", "vm", vm["id"], "ok", "console session issued", user["username"])
    host = core.config.server_names[0]
    return {"url": f"wss://{host}:{core.config.console_port}{PATH_PREFIX}{token}",
            "page": f"{core.config.public_url}/vms/{vm['id']}/console",
            "expires_at": expires.isoformat(timespec="seconds"), "password": None}
