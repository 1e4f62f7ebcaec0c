"""Measurement 7: placement over 10 hosts and the database time of one create, in process.

A temporary inventory (SQLite file, WAL, the controller's own migrations) on the
same filesystem as the controller's data holds 10 up hosts and 500 VMs.

- Placement: controller.scheduler.place() called for a 1 vCPU / 512 MiB VM.
- Database time per create: controller.ops.vms.create() run for real against that
  inventory with two stand-ins injected into the Core: a task runner that holds the
  task back (so the request's part, validation plus the reservation transaction, is
  timed alone) and then runs it in the calling thread, and agents that answer at once
  (so only the task's own database writes are timed: running, progress, the VM's
  state and domain XML, the audit event, the result). No agent or libvirt time is in
  these figures; what is left is SQLite, the controller's Python around it, and
  nothing else.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.stats import summary
from controller import ipam, reqid
from controller.config import Config
from controller.core import Core
from controller.db import Database, now
from controller.ops import vms as vm_ops
from controller.scheduler import Need, place
from controller.tasks import TaskRunner

HOSTS = 10


class HeldTasks(TaskRunner):
    """A task runner that keeps submitted work until run_now() runs it in the calling thread."""

    def __init__(self, db: Database) -> None:
        super().__init__(db, workers=1)
        self.held: dict[str, tuple[Callable[..., Any], Callable[[], None] | None]] = {}

    def submit(self, task_id: str, fn: Callable[..., Any], on_failure: Callable[[], None] | None = None) -> None:
        """Hold the task instead of starting it."""
        self.held[task_id] = (fn, on_failure)

    def run_now(self, task_id: str) -> None:
        """Run a held task here, as a worker thread would."""
        fn, on_failure = self.held.pop(task_id)
        self._run(task_id, fn, on_failure, reqid.get())


class InstantAgent:
    """An agent that has done each verb already: no network, no libvirt."""

    def ensure_image(self, sha256: str, size: int, url: str) -> dict[str, Any]:
        """Say the image is cached."""
        return {"path": f"/pool/base-{sha256}.qcow2", "fetched": False}

    def create_vm(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Say the domain runs, with a domain XML of the usual size."""
        return {"uuid": spec["uuid"], "state": "running", "xml": "<domain type='qemu'>" + " " * 3000 + "</domain>"}


class InstantAgents:
    """Hands out InstantAgent for every host."""

    def client(self, host: dict[str, Any]) -> InstantAgent:
        """Return the instant agent."""
        return InstantAgent()


def _fill(core: Core, vms: int) -> dict[str, Any]:
    """Insert 10 up hosts, an image, a flavor, a /22 network and vms running VMs spread over the hosts."""
    db = core.db
    stamp = now()
    with db.write() as w:
        host_ids = [str(uuid.uuid4()) for _ in range(HOSTS)]
        for i, host_id in enumerate(host_ids):
            w.execute("INSERT INTO hosts (id, name, address, agent_port, state, cert_fingerprint, vcpus, memory_mib,"
                      " disk_free_gib, disk_total_gib, last_seen, joined_at) VALUES (?, ?, '127.0.0.1', 9, 'up', ?,"
                      " 64, 262144, 2000, 2000, ?, ?)", [host_id, f"h{i + 1}", uuid.uuid4().hex, stamp, stamp])
        image_id = str(uuid.uuid4())
        w.execute("INSERT INTO images (id, name, source_format, sha256, size_bytes, virtual_size_bytes, state,"
                  " created_at) VALUES (?, 'debian12', 'qcow2', ?, 189000000, 2147483648, 'available', ?)",
                  [image_id, uuid.uuid4().hex * 2, stamp])
        w.execute("INSERT INTO flavors (name, vcpus, memory_mib, disk_gib) VALUES ('small', 1, 512, 4)")
        row = ipam.validate_network({"name": "lan", "bridge": "br0", "cidr": "10.20.0.0/22", "gateway": "10.20.0.1",
                                     "range": ["10.20.0.10", "10.20.3.250"], "dns": ["10.20.0.1"]})
        row["created_at"] = stamp
        cols = ", ".join(row)
        w.execute(f"INSERT INTO networks ({cols}) VALUES ({', '.join('?' * len(row))})",  # noqa: S608
                  list(row.values()))
        network = db.one("SELECT * FROM networks WHERE name = 'lan'")
        owner = db.one("SELECT id FROM users WHERE username = 'admin'")
        assert network is not None and owner is not None
        for k in range(vms):
            vm_id = str(uuid.uuid4())
            w.execute("INSERT INTO vms (id, name, owner_id, host_id, image_id, flavor_id, vcpus, memory_mib, disk_gib,"
                      " hostname, state, domain_xml, created_at, updated_at) VALUES (?, ?, ?, ?, ?, 1, 1, 512, 4, ?,"
                      " 'running', ?, ?, ?)", [vm_id, f"vm-{k:04d}", owner["id"], host_ids[k % HOSTS], image_id,
                                              f"vm-{k:04d}", "<domain/>" + " " * 3000, stamp, stamp])
            address = ipam.allocate(db, network, vm_id)
            w.execute("INSERT INTO vm_nics (vm_id, idx, network_id, mac, address) VALUES (?, 0, ?, ?, ?)",
                      [vm_id, network["id"], f"52:54:00:{k >> 16 & 255:02x}:{k >> 8 & 255:02x}:{k & 255:02x}",
                       address])
    admin = db.one("SELECT * FROM users WHERE username = 'admin'")
    assert admin is not None
    return admin


def scheduler_and_db(work_dir: Path, vms: int, placements: int, creates: int) -> dict[str, Any]:
    """Return placement p99 and database time per create over a temporary inventory of 10 hosts and vms VMs."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="labcloud-bench-inproc-") as tmp:
        config = Config(data_dir=Path(tmp) / "data", admin_password="bench-admin-pw",  # noqa: S106
                        task_workers=1)
        core = Core.start(config)
        core.tasks.shutdown(wait=True)
        tasks = HeldTasks(core.db)
        core.tasks = tasks
        core.agents = InstantAgents()  # type: ignore[assignment]
        try:
            admin = _fill(core, vms)
            need = Need(1, 512, 4)
            place_ms = []
            for _ in range(placements):
                t0 = time.perf_counter()
                place(core.db, need)
                place_ms.append((time.perf_counter() - t0) * 1000)
            request_ms, task_ms, total_ms = [], [], []
            failed = 0
            for k in range(creates):
                body = {"name": f"bench-{k:04d}", "image": "debian12", "flavor": "small",
                        "networks": [{"network": "lan"}]}
                t0 = time.perf_counter()
                task = vm_ops.create(core, body, admin)
                t1 = time.perf_counter()
                tasks.run_now(task["id"])
                t2 = time.perf_counter()
                if core.tasks.get(task["id"])["state"] != "succeeded":
                    failed += 1
                request_ms.append((t1 - t0) * 1000)
                task_ms.append((t2 - t1) * 1000)
                total_ms.append((t2 - t0) * 1000)
        finally:
            core.close()
            core.db.close()
    return {"placement_ms": summary(place_ms), "create_db_ms": summary(total_ms),
            "create_request_db_ms": summary(request_ms), "create_task_db_ms": summary(task_ms),
            "hosts": HOSTS, "vms": vms, "creates": creates, "create_failures": failed}
