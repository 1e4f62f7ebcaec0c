"""Browser tests: Debian's Chromium driven by Playwright against a real controller process (no lab).

The controller runs `labcloud-controller serve` on 127.0.0.1 with a temporary data directory. Inventory
rows (hosts, images, flavors, networks, users, VMs, tasks) are written into its SQLite file directly, as
joins, heartbeats and finished tasks would have left them; the hosts' agents are unreachable, so every
task that needs a host fails, which the UI must show. Chromium trusts the controller's certificate by its
SPKI pin, computed from pki/server.pem: no certificate errors are ignored.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from controller import auth as authn
from controller.db import Database, now
from lab.procs import stop_child
from tests.conftest import ADMIN_PASSWORD, MEMBER_PASSWORD, Inventory

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
PORT, AGENT_PORT, CONSOLE_PORT = 18470, 18471, 18473
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def spki_pin(cert_pem: bytes) -> str:
    """Return base64(SHA-256(SubjectPublicKeyInfo)) of a certificate, as Chromium's SPKI list wants it."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@dataclass
class Controller:
    """A running controller process and its inventory."""

    url: str
    data_dir: Path
    db: Database
    inv: Inventory
    proc: subprocess.Popen[bytes]
    ids: dict[str, Any]

    def vm_id(self, name: str) -> str | None:
        """Return a VM's id by name, or None when it does not exist."""
        row = self.db.one("SELECT id FROM vms WHERE name = ?", [name])
        return row["id"] if row else None


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "labcloud: ready" in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"the controller exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)
    raise RuntimeError(f"the controller did not get ready within {timeout:.0f} s:\n{log.read_text(errors='replace')}")


def add_task(db: Database, kind: str, user_id: int, vm: dict[str, Any] | None, state: str, progress: int,
             message: str, error: str | None = None) -> str:
    """Insert a task row as the task runner would have left it."""
    task_id = str(uuid.uuid4())
    finished = now() if state in ("succeeded", "failed") else None
    with db.write() as w:
        w.execute("INSERT INTO tasks (id, kind, state, progress, message, error, request_id, user_id, vm_id, vm_name,"
                  " host_id, created_at, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  [task_id, kind, state, progress, message, error, "req-" + uuid.uuid4().hex, user_id,
                   vm["id"] if vm else None, vm["name"] if vm else None, vm["host_id"] if vm else None,
                   now(), now(), finished])
    return task_id


def _seed(db: Database, inv: Inventory) -> dict[str, Any]:
    alice = authn.create_user(db, "alice", MEMBER_PASSWORD)
    bob = authn.create_user(db, "bob", MEMBER_PASSWORD)
    h1 = inv.host("h1", vcpus=16, memory_mib=65536, disk_free_gib=620.0, disk_total_gib=900.0)
    h2 = inv.host("h2", vcpus=8, memory_mib=32768, disk_free_gib=210.0, disk_total_gib=450.0)
    inv.host("h3", state="maintenance", vcpus=8, memory_mib=16384)
    image = inv.image("debian12")
    inv.image("ubuntu24", state="importing")
    small = inv.flavor("small", 1, 512, 5)
    large = inv.flavor("large", 2, 4096, 20)
    inv.flavor("huge", 64, 262144, 100)
    lan = inv.network("lan")
    vms = {
        "web1": inv.vm("web1", 1, h1, network=lan, ip="10.0.0.40", memory_mib=4096, vcpus=2),
        "web2": inv.vm("web2", 1, h1, network=lan, memory_mib=4096, vcpus=2),
        "db1": inv.vm("db1", 1, h2, network=lan, state="shutoff", memory_mib=4096, vcpus=2),
        "alice-vm": inv.vm("alice-vm", alice, h2, network=lan, ip="10.0.0.60"),
        "bob-vm": inv.vm("bob-vm", bob, h1, network=lan, ip="10.0.0.70"),
    }
    with db.write() as w:  # as a create through the API leaves them: with image and flavor
        for vm in vms.values():
            flavor = large if vm["memory_mib"] >= 4096 else small
            w.execute("UPDATE vms SET image_id = ?, flavor_id = ? WHERE id = ?", [image["id"], flavor["id"], vm["id"]])
    add_task(db, "vm.create", 1, vms["web1"], "succeeded", 100, "done")
    add_task(db, "vm.reboot", 1, vms["web2"], "succeeded", 100, "done")
    add_task(db, "vm.shutdown", 1, vms["db1"], "failed", 50, "failed",
             "the guest did not shut down within 120 s (state running); use poweroff to force it off")
    add_task(db, "vm.create", alice, vms["alice-vm"], "succeeded", 100, "done")
    add_task(db, "vm.create", bob, vms["bob-vm"], "succeeded", 100, "done")
    return {"alice": alice, "bob": bob, "h1": h1, "h2": h2, "lan": lan, "vms": vms}


@pytest.fixture(scope="session")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    """Run `labcloud-controller serve` on 127.0.0.1:18470 with a seeded inventory; stop it by its pid."""
    data = tmp_path_factory.mktemp("controller")
    log = data.parent / "controller.log"
    env = {**os.environ, "LABCLOUD_DATA_DIR": str(data), "LABCLOUD_PORT": str(PORT),
           "LABCLOUD_AGENT_PORT": str(AGENT_PORT), "LABCLOUD_CONSOLE_PORT": str(CONSOLE_PORT),
           "LABCLOUD_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "LABCLOUD_LISTEN": "127.0.0.1", "LABCLOUD_AGENT_LISTEN": "127.0.0.1",
           "LABCLOUD_AGENT_RETRY_S": "0"}  # its hosts' agents never come: a create fails at once
    env.pop("LABCLOUD_SERVER_NAMES", None)
    exe = Path(sys.executable).parent / "labcloud-controller"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(exe), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    stop = threading.Event()
    try:
        _wait_ready(proc, log)
        db = Database(data / "inventory.db")
        inv = Inventory(db)
        ids = _seed(db, inv)

        def heartbeat() -> None:
            # Stands in for the agents' heartbeats, so the hosts stay up while the tests run.
            beat = Database(data / "inventory.db")
            while not stop.wait(2.0):
                with beat.write() as w:
                    w.execute("UPDATE hosts SET last_seen = ? WHERE state != 'down'", [now()])
            beat.close()

        thread = threading.Thread(target=heartbeat, name="heartbeat", daemon=True)
        thread.start()
        yield Controller(f"https://127.0.0.1:{PORT}", data, db, inv, proc, ids)
        stop.set()
        thread.join(timeout=5)
        db.close()
    finally:
        stop.set()
        stop_child(proc, grace=15)
        (ROOT / "artifacts").mkdir(exist_ok=True)
        shutil.copy(log, ROOT / "artifacts" / "browser-controller.log")  # for a person to read after a failure


@pytest.fixture(scope="session")
def playwright() -> Iterator[Any]:
    """Playwright, started once per session (browsers for different controllers are launched from it)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install it with 'apt-get install -y chromium' (scripts/setup does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python package 'playwright' is missing: install labcloud's dev dependencies (scripts/setup)")
    with sync_playwright() as pw:
        yield pw


def launch_chromium(pw: Any, server_cert: Path) -> Any:
    """Launch Debian's Chromium trusting exactly one server certificate (by its SPKI pin)."""
    pin = spki_pin(server_cert.read_bytes())
    return pw.chromium.launch(executable_path=CHROMIUM,
                              args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={pin}"])


@pytest.fixture(scope="session")
def browser(playwright: Any, controller: Controller) -> Iterator[Any]:
    """Debian's Chromium, trusting exactly the controller's certificate (SPKI pin)."""
    chromium = launch_chromium(playwright, controller.data_dir / "pki" / "server.pem")
    yield chromium
    chromium.close()


class Console:
    """The browser console's errors and the page's failed requests, to assert a page is clean."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def clean(self) -> bool:
        """Say whether nothing went wrong (no CSP violation, no script error)."""
        return not self.errors


def new_page(browser: Any, base_url: str) -> tuple[Any, Any]:
    """Open a fresh context and page on base_url, collecting the browser console's errors."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1360, "height": 900},
                                  timezone_id="Europe/Berlin", locale="en-GB")
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    console = Console()
    pg.on("console", lambda msg: console.errors.append(msg.text) if msg.type == "error" else None)
    pg.on("pageerror", lambda exc: console.errors.append(str(exc)))
    pg.console_log = console
    return context, pg


@pytest.fixture
def page(browser: Any, controller: Controller) -> Iterator[Any]:
    """A fresh browser context and page on the controller, with its console errors collected."""
    context, pg = new_page(browser, controller.url)
    yield pg
    context.close()


def login(pg: Any, username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    """Log in through the form and wait for the dashboard."""
    pg.goto("/login")
    pg.get_by_label("Username").fill(username)
    pg.get_by_label("Password").fill(password)
    pg.get_by_role("button", name="Log in").click()
    pg.wait_for_url("**/")
    ready(pg)


def ready(pg: Any) -> None:
    """Wait until the page's scripts have started (app.js sets data-ready)."""
    pg.wait_for_selector("html[data-ready='1']", state="attached")


def shot(pg: Any, name: str, full_page: bool = True) -> Path:
    """Save a screenshot under artifacts/screenshots/ and check it is not blank."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    pg.screenshot(path=str(path), full_page=full_page)
    assert distinct_pixel_bytes(path.read_bytes()) > 40, f"{path} looks blank"
    return path


def distinct_pixel_bytes(png: bytes) -> int:
    """Return how many distinct byte values a PNG's decompressed pixel data holds (a blank image has ~2)."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n"), "not a PNG"
    pos, idat = 8, b""
    while pos < len(png):
        length = int.from_bytes(png[pos:pos + 4], "big")
        kind = png[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += png[pos + 8:pos + 8 + length]
        pos += 12 + length
    return len(set(zlib.decompress(idat)))
