"""`labcloud-controller backup` / `restore`: an online backup taken while the controller writes restores
into a fresh controller process with an equal inventory; restore refuses a live database."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from controller import cli
from controller.backup import BackupError, backup, controller_lock, restore
from controller.db import Database
from lab.procs import stop_child
from tests.conftest import ADMIN_PASSWORD, Inventory, closed_port

EXE = Path(sys.executable).parent / "labcloud-controller"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Running:
    """A `labcloud-controller serve` process and an admin API session on it."""

    proc: subprocess.Popen[bytes]
    data: Path
    url: str
    http: requests.Session

    def get(self, path: str) -> Any:
        """GET an API path and return its JSON."""
        resp = self.http.get(self.url + path, timeout=30)
        assert resp.status_code == 200, resp.text
        return resp.json()


def _env(data: Path) -> dict[str, str]:
    env = {**os.environ, "LABCLOUD_DATA_DIR": str(data), "LABCLOUD_PORT": str(closed_port()),
           "LABCLOUD_AGENT_PORT": str(closed_port()),
           "LABCLOUD_CONSOLE_PORT": str(closed_port()), "LABCLOUD_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "LABCLOUD_LISTEN": "127.0.0.1", "LABCLOUD_AGENT_LISTEN": "127.0.0.1",
           "LABCLOUD_AGENT_RETRY_S": "0"}  # the test host's agent never comes: creates fail at once
    env.pop("LABCLOUD_SERVER_NAMES", None)
    return env


def _cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], env=_env(data), capture_output=True, text=True, timeout=120,
                          check=False, cwd=ROOT)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Any]:
    """serve(data_dir) starts a controller process; every one started is stopped by its pid afterwards."""
    started: list[subprocess.Popen[bytes]] = []

    def start(data: Path) -> Running:
        env = _env(data)
        log = tmp_path / f"controller-{len(started)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([str(EXE), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        started.append(proc)
        deadline = time.monotonic() + 60
        while "labcloud: ready" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.1)
        http = requests.Session()
        http.trust_env = False
        http.verify = str(data / "pki" / "ca.pem")
        url = f"https://127.0.0.1:{env['LABCLOUD_PORT']}/api/v1"
        resp = http.post(url + "/tokens", json={"username": "admin", "password": ADMIN_PASSWORD}, timeout=30)
        assert resp.status_code == 201, resp.text
        http.headers["Authorization"] = f"Bearer {resp.json()['token']}"
        return Running(proc, data, url, http)

    yield start
    for proc in started:
        stop_child(proc, grace=15)


def _inventory(c: Running) -> dict[str, Any]:
    """What the API shows of the inventory (hosts without their liveness, which follows the clock)."""
    hosts = [{k: h[k] for k in ("id", "name", "address", "vcpus", "memory_mib")} for h in c.get("/hosts")["hosts"]]
    tasks = sorted(c.get("/tasks?limit=1000")["tasks"], key=lambda t: t["id"])
    return {"hosts": hosts, "vms": c.get("/vms")["vms"], "flavors": c.get("/flavors")["flavors"],
            "networks": c.get("/networks")["networks"], "addresses": c.get("/networks/lan/addresses"),
            "images": c.get("/images")["images"], "tasks": tasks}


def test_backup_while_writing_restores_into_a_fresh_controller(tmp_path: Path, serve: Any) -> None:
    live = serve(tmp_path / "live")
    db = Database(live.data / "inventory.db")
    inv = Inventory(db)
    # Its agent is unreachable: every create task fails fast and rolls back. Its last heartbeat lies
    # in the future, so the controller never marks it down however slow this machine is.
    host = inv.host("h1", last_seen="2999-01-01T00:00:00+00:00")
    inv.image("debian12")
    lan = inv.network("lan")
    inv.flavor("small")
    for i in range(3):
        inv.vm(f"kept{i}", 1, host, network=lan)
    db.close()

    stop = threading.Event()
    written: list[str] = []
    errors: list[str] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            resp = live.http.post(live.url + "/flavors", json={"name": f"f{i}", "vcpus": 1, "memory_mib": 256,
                                                              "disk_gib": 1}, timeout=30)
            if resp.status_code != 201:
                errors.append(resp.text)
            written.append(f"f{i}")
            resp = live.http.post(live.url + "/vms", json={"name": f"new{i}", "image": "debian12", "flavor": "small",
                                                          "networks": [{"network": "lan"}]}, timeout=30)
            if resp.status_code != 202:
                errors.append(resp.text)

    threads = [threading.Thread(target=writer, daemon=True)]
    for t in threads:
        t.start()
    try:
        while len(written) < 5:
            time.sleep(0.05)
        before_backup = list(written)
        during = _cli(live.data, "backup", str(tmp_path / "during.db"))
        assert during.returncode == 0, during.stderr
        assert "backed up the inventory" in during.stdout
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert errors == []
    deadline = time.monotonic() + 60  # let the last create tasks finish
    while any(t["state"] in ("pending", "running") for t in live.get("/tasks?limit=1000")["tasks"]):
        assert time.monotonic() < deadline
        time.sleep(0.2)

    quiet = _cli(live.data, "backup", str(tmp_path / "quiet.db"))
    assert quiet.returncode == 0, quiet.stderr
    refused = _cli(live.data, "restore", str(tmp_path / "quiet.db"))
    assert refused.returncode == 1 and "controller is running" in refused.stderr

    # The backup taken after the writes: a fresh controller shows exactly the live inventory.
    fresh = tmp_path / "fresh"
    restored = _cli(fresh, "restore", str(tmp_path / "quiet.db"))
    assert restored.returncode == 0, restored.stderr
    assert _inventory(serve(fresh)) == _inventory(live)

    # The backup taken during the writes: consistent, holds what was written before it started,
    # and a controller starting on it resolves the tasks that were running then.
    mid = tmp_path / "mid"
    assert _cli(mid, "restore", str(tmp_path / "during.db")).returncode == 0
    c = serve(mid)
    names = {f["name"] for f in c.get("/flavors")["flavors"]}
    assert set(before_backup) <= names <= {"small", *written}
    assert {v["name"] for v in c.get("/vms")["vms"]} >= {"kept0", "kept1", "kept2"}
    assert all(t["state"] in ("succeeded", "failed") for t in c.get("/tasks?limit=1000")["tasks"])


def test_backup_of_a_database_being_written_is_consistent(tmp_path: Path) -> None:
    db = Database(tmp_path / "inventory.db")
    db.migrate()
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            with db.write() as w:
                w.execute("INSERT INTO flavors (name, vcpus, memory_mib, disk_gib) VALUES (?, 1, 1, 1)", [f"f{i}"])
        db.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(0.2)
        out = backup(tmp_path / "inventory.db", tmp_path / "b.db")
    finally:
        stop.set()
        t.join()
    assert out["schema_version"] >= 4 and out["bytes"] > 0
    assert oct((tmp_path / "b.db").stat().st_mode & 0o777) == "0o600"
    copy = sqlite3.connect(tmp_path / "b.db")
    names = [r[0] for r in copy.execute("SELECT name FROM flavors ORDER BY id")]
    copy.close()
    assert names == [f"f{i}" for i in range(1, len(names) + 1)]  # a prefix of the writes, no gap
    assert not (tmp_path / "b.db-wal").exists()


def test_restore_refuses_a_live_database_and_a_damaged_backup(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = Database(data / "inventory.db")
    db.migrate()
    db.close()
    backup(data / "inventory.db", tmp_path / "good.db")
    with controller_lock(data), pytest.raises(BackupError, match="controller is running"):
        restore(tmp_path / "good.db", data / "inventory.db")
    (tmp_path / "junk.db").write_bytes(b"not a database" * 100)
    with pytest.raises(BackupError, match="not a labcloud inventory"):
        restore(tmp_path / "junk.db", data / "inventory.db")
    out = restore(tmp_path / "good.db", data / "inventory.db")
    assert out["kept"] and Path(out["kept"]).exists()


def test_cli_backup_without_an_inventory_says_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LABCLOUD_DATA_DIR", str(tmp_path / "nothing"))
    assert cli.main(["backup", str(tmp_path / "b.db")]) == 1
    assert "LABCLOUD_DATA_DIR" in capsys.readouterr().err
