"""A create that fails at any step leaves no VM, no held address, and says what to do (fake agent)."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from controller.agentclient import AgentError
from controller.core import Core
from tests.conftest import Inventory


class FailingAgent:
    """An agent whose image cache or create fails as a real one does; records destroys."""

    def __init__(self, fail_at: str, error: AgentError) -> None:
        self.fail_at, self.error = fail_at, error
        self.destroyed: list[str] = []

    def ensure_image(self, *_args: Any) -> dict[str, Any]:
        if self.fail_at == "image":
            raise self.error
        return {"path": "/pool/base", "fetched": False}

    def create_vm(self, spec: dict[str, Any]) -> dict[str, Any]:
        raise self.error

    def destroy_vm(self, uuid: str) -> dict[str, Any]:
        self.destroyed.append(uuid)
        return {"uuid": uuid}


@pytest.mark.parametrize(("fail_at", "error", "says"), [
    ("image", AgentError("h1", "controller answered 404 for the image", 502, "fetch_failed"),
     "import the image again"),
    ("image", AgentError("h1", "not enough space in pool labcloud: image needs 9 bytes, 1 free; free space on the"
                         " host", 507, "no_space"), "free space on the host"),
    ("create", AgentError("h1", "defining the domain: Failed to connect socket to libvirt", 500, "libvirt"),
     "libvirt"),
])
def test_failed_create_leaves_nothing_and_says_what(client: FlaskClient, core: Core, inv: Inventory,
                                                   auth: dict[str, str], wait: Any, monkeypatch: pytest.MonkeyPatch,
                                                   fail_at: str, error: AgentError, says: str) -> None:
    inv.host("h1")
    inv.image("debian12")  # no file on the controller: an image whose file went missing
    inv.flavor("small")
    inv.network("lan")
    agent = FailingAgent(fail_at, error)
    monkeypatch.setattr(core, "agent", lambda _host_id: agent)
    resp = client.post("/api/v1/vms", headers=auth, json={"name": "vm1", "image": "debian12", "flavor": "small",
                                                          "networks": [{"network": "lan", "ip": "10.0.0.50"}]})
    task = wait(resp.get_json()["task"]["id"])
    assert task["state"] == "failed" and says in task["error"], task["error"]
    assert inv.count("vms") == 0 and inv.count("ip_allocations") == 0 and inv.count("vm_nics") == 0
    assert agent.destroyed == ([task["vm_id"]] if fail_at == "create" else [])


class RestartingAgent:
    """An agent that is unreachable for its first calls (being restarted), then creates the VM."""

    def __init__(self, down_for: int) -> None:
        self.down_for, self.calls = down_for, 0

    def _maybe_down(self) -> None:
        self.calls += 1
        if self.calls <= self.down_for:
            raise AgentError("h1", "agent unreachable (ConnectionError); is it running?")

    def ensure_image(self, *_args: Any) -> dict[str, Any]:
        self._maybe_down()
        return {"path": "/pool/base", "fetched": False}

    def create_vm(self, spec: dict[str, Any]) -> dict[str, Any]:
        self._maybe_down()
        return {"uuid": spec["uuid"], "state": "running", "xml": "<domain/>"}


def test_create_retries_an_agent_that_is_restarting(client: FlaskClient, core: Core, inv: Inventory,
                                                    auth: dict[str, str], wait: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.ops import vms

    inv.host("h1")
    inv.image("debian12")
    inv.flavor("small")
    inv.network("lan")
    agent = RestartingAgent(down_for=3)
    monkeypatch.setattr(core, "agent", lambda _host_id: agent)
    monkeypatch.setattr(core.config, "agent_retry_s", 10.0)
    monkeypatch.setattr(vms, "RETRY_PAUSE_S", 0.01)
    resp = client.post("/api/v1/vms", headers=auth, json={"name": "vm1", "image": "debian12", "flavor": "small",
                                                          "networks": [{"network": "lan"}]})
    task = wait(resp.get_json()["task"]["id"])
    assert task["state"] == "succeeded", task["error"]
    assert agent.calls == 5  # three refused, then the image and the create
    assert core.db.one("SELECT state FROM vms WHERE name = 'vm1'") == {"state": "running"}
