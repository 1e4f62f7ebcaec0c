"""Shared fixtures: a controller app on a fresh data directory, users, tokens, inventory rows."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from controller import auth as authn
from controller import ipam
from controller.app import create_app
from controller.config import Config
from controller.core import Core
from controller.db import Database, now
from tests.labcloud import api, cleanup, cloud  # noqa: F401 - session lab fixtures for tests/lab and tests/browser

ADMIN_PASSWORD = "admin-pass-1"
MEMBER_PASSWORD = "member-pass-1"


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """Controller settings on a temporary data directory."""
    return Config(data_dir=tmp_path / "data", admin_password=ADMIN_PASSWORD, host_down_after_s=2.0, task_workers=4,
                  agent_retry_s=0.0)  # an unreachable test agent stays unreachable: do not wait for it


@pytest.fixture
def app(config: Config) -> Iterator[Flask]:
    """The public app with its own Core; the task runner is stopped afterwards."""
    application = create_app(config)
    yield application
    c: Core = application.extensions["labcloud"]
    c.close()
    c.tasks.shutdown(wait=True)  # no task thread outlives the test's data directory
    c.db.close()


@pytest.fixture
def core(app: Flask) -> Core:
    """The app's Core: database, task runner, CA."""
    c: Core = app.extensions["labcloud"]
    return c


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the public app."""
    return app.test_client()


@pytest.fixture
def admin_token(client: FlaskClient) -> str:
    """An API token of the bootstrap admin, obtained the way a user would."""
    resp = client.post("/api/v1/tokens", json={"username": "admin", "password": ADMIN_PASSWORD})
    assert resp.status_code == 201, resp.get_json()
    return str(resp.get_json()["token"])


@pytest.fixture
def auth(admin_token: str) -> dict[str, str]:
    """Headers that authenticate as the admin."""
    return {"Authorization": f"Bearer {admin_token}"}


def _user(core: Core, username: str, role: str = "member") -> dict[str, Any]:
    user_id = authn.create_user(core.db, username, MEMBER_PASSWORD, role)
    token = authn.issue_token(core.db, user_id, "tests")
    return {"id": user_id, "username": username, "role": role, "token": token,
            "headers": {"Authorization": f"Bearer {token}"}}


@pytest.fixture
def member(core: Core) -> dict[str, Any]:
    """A member user: {id, username, role, token, headers}."""
    return _user(core, "alice")


@pytest.fixture
def other_member(core: Core) -> dict[str, Any]:
    """A second member user, to check that members do not see each other's objects."""
    return _user(core, "bob")


def closed_port() -> int:
    """Return a local TCP port nothing listens on, so an agent there is unreachable at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Inventory:
    """Inserts inventory rows directly, as joins, heartbeats and imports would have left them."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def host(self, name: str = "h1", *, state: str = "up", vcpus: int = 8, memory_mib: int = 16384,
             disk_free_gib: float = 500.0, last_seen: str | None = None, **extra: Any) -> dict[str, Any]:
        """Insert a host whose agent is unreachable (a closed local port)."""
        row = {"id": str(uuid.uuid4()), "name": name, "address": "127.0.0.1", "agent_port": closed_port(),
               "state": state, "cert_fingerprint": uuid.uuid4().hex, "vcpus": vcpus, "memory_mib": memory_mib,
               "disk_free_gib": disk_free_gib, "disk_total_gib": disk_free_gib, "joined_at": now(),
               "last_seen": last_seen or now(), **extra}
        self._insert("hosts", row)
        return self.db.one("SELECT * FROM hosts WHERE id = ?", [row["id"]]) or {}

    def image(self, name: str = "debian", state: str = "available") -> dict[str, Any]:
        """Insert an image as a finished import leaves it."""
        row = {"id": str(uuid.uuid4()), "name": name, "source_format": "qcow2", "sha256": uuid.uuid4().hex * 2,
               "size_bytes": 1 << 20, "virtual_size_bytes": 1 << 30, "state": state, "created_at": now()}
        self._insert("images", row)
        return row

    def flavor(self, name: str = "small", vcpus: int = 1, memory_mib: int = 512, disk_gib: int = 5) -> dict[str, Any]:
        """Insert a flavor."""
        self._insert("flavors", {"name": name, "vcpus": vcpus, "memory_mib": memory_mib, "disk_gib": disk_gib})
        return self.db.one("SELECT * FROM flavors WHERE name = ?", [name]) or {}

    def network(self, name: str = "lan", cidr: str = "10.0.0.0/24",
                range_: tuple[str, str] = ("10.0.0.10", "10.0.0.200"), gateway: str | None = "10.0.0.1",
                ) -> dict[str, Any]:
        """Insert a network through the same validation the API uses."""
        row = ipam.validate_network({"name": name, "bridge": "br0", "cidr": cidr, "gateway": gateway,
                                     "range": list(range_), "dns": ["10.0.0.2"]})
        row["created_at"] = now()
        self._insert("networks", row)
        return self.db.one("SELECT * FROM networks WHERE name = ?", [name]) or {}

    def vm(self, name: str, owner_id: int, host: dict[str, Any] | None, *, network: dict[str, Any] | None = None,
           ip: str | None = None, state: str = "running", memory_mib: int = 512, vcpus: int = 1) -> dict[str, Any]:
        """Insert a VM (with one NIC and its address when a network is given), as a finished create leaves it."""
        vm_id = str(uuid.uuid4())
        with self.db.write() as w:
            w.execute(
                "INSERT INTO vms (id, name, owner_id, host_id, vcpus, memory_mib, disk_gib, hostname, state,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, 5, ?, ?, ?, ?)",
                [vm_id, name, owner_id, host["id"] if host else None, vcpus, memory_mib, name, state, now(), now()],
            )
            if network is not None:
                address = ipam.allocate(self.db, network, vm_id, ip)
                w.execute("INSERT INTO vm_nics (vm_id, idx, network_id, mac, address) VALUES (?, 0, ?, ?, ?)",
                          [vm_id, network["id"], "52:54:00:" + ":".join(uuid.uuid4().hex[i:i + 2] for i in (0, 2, 4)),
                           address])
        return self.db.one("SELECT * FROM vms WHERE id = ?", [vm_id]) or {}

    def count(self, table: str) -> int:
        """Return how many rows a table holds."""
        return int(self.db.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608 - our tables

    def counts(self) -> dict[str, int]:
        """Return the row count of every table a request could change."""
        return {t: self.count(t) for t in ("vms", "vm_nics", "ip_allocations", "tasks", "events", "flavors",
                                           "networks", "images", "hosts", "join_tokens", "api_tokens", "users")}

    def _insert(self, table: str, row: dict[str, Any]) -> None:
        cols = ", ".join(row)
        with self.db.write() as w:
            w.execute(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' * len(row))})",  # noqa: S608
                      list(row.values()))


@pytest.fixture
def inv(core: Core) -> Inventory:
    """Direct inventory inserts and row counts."""
    return Inventory(core.db)


def wait_task(core: Core, task_id: str, timeout: float = 15.0) -> dict[str, Any]:
    """Wait until a task has finished and return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = core.tasks.get(task_id)
        if task["state"] in ("succeeded", "failed"):
            return task
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} still {core.tasks.get(task_id)['state']} after {timeout} s")


@pytest.fixture
def wait(core: Core) -> Any:
    """wait(task_id) -> the finished task."""
    return lambda task_id, timeout=15.0: wait_task(core, task_id, timeout)


def assert_error(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """Check the API's error document and return its 'error' object."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    doc = resp.get_json()
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert set(err) == {"code", "message", "request_id"}, err
    assert err["message"], err
    assert err["request_id"] == resp.headers["X-Request-Id"]
    if code is not None:
        assert err["code"] == code, err
    return dict(err)
