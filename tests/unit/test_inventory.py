"""The inventory database (migrations, WAL, write transactions) and placement."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.db import BUSY_TIMEOUT_MS, Database, _migrations, now
from controller.errors import Conflict
from controller.scheduler import Need, free_capacity, host_usage, place
from tests.conftest import Inventory

SMALL = Need(vcpus=1, memory_mib=1024, disk_gib=10)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A migrated inventory with one user, without the rest of the controller."""
    database = Database(tmp_path / "inventory.db")
    database.migrate()
    with database.write() as w:
        w.execute("INSERT INTO users (id, username, password_hash, role, created_at)"
                  " VALUES (1, 'admin', 'x', 'admin', ?)", [now()])
    yield database
    database.close()


@pytest.fixture
def rows(db: Database) -> Inventory:
    """Direct inserts into the bare inventory."""
    return Inventory(db)


def pragma(db: Database, name: str) -> object:
    """Return a PRAGMA's value on this thread's connection."""
    return db.db.execute(f"PRAGMA {name}").fetchone()[0]


# --- the database -------------------------------------------------------------------------------


def test_migrate_is_idempotent_and_sets_user_version(tmp_path: Path) -> None:
    latest = max(version for version, _sql in _migrations())
    assert latest >= 1
    first = Database(tmp_path / "inv.db")
    assert first.migrate() == latest
    assert pragma(first, "user_version") == latest
    tables = {r["name"] for r in first.all("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"users", "api_tokens", "hosts", "images", "flavors", "networks", "vms", "vm_nics", "ip_allocations",
            "tasks", "events", "join_tokens"} <= tables
    with first.write() as w:
        w.execute("INSERT INTO flavors (name, vcpus, memory_mib, disk_gib) VALUES ('small', 1, 512, 5)")
    assert first.migrate() == latest  # again, on the same connection
    first.close()
    second = Database(tmp_path / "inv.db")  # and from a new process's point of view
    assert second.migrate() == latest
    assert pragma(second, "user_version") == latest
    assert second.all("SELECT name FROM flavors") == [{"name": "small"}]  # data kept
    second.close()


def test_wal_mode_busy_timeout_and_foreign_keys(db: Database) -> None:
    assert pragma(db, "journal_mode") == "wal"
    assert pragma(db, "busy_timeout") == BUSY_TIMEOUT_MS
    assert pragma(db, "foreign_keys") == 1
    seen: dict[str, object] = {}

    def other_thread() -> None:  # every thread's connection gets the same settings
        seen.update(journal=pragma(db, "journal_mode"), busy=pragma(db, "busy_timeout"), fk=pragma(db, "foreign_keys"))
        db.close()

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    assert seen == {"journal": "wal", "busy": BUSY_TIMEOUT_MS, "fk": 1}


def test_write_rolls_back_on_exception(db: Database) -> None:
    with pytest.raises(RuntimeError), db.write() as w:
        w.execute("INSERT INTO flavors (name, vcpus, memory_mib, disk_gib) VALUES ('a', 1, 512, 5)")
        with db.write() as inner:  # a nested block joins the outer transaction
            inner.execute("INSERT INTO flavors (name, vcpus, memory_mib, disk_gib) VALUES ('b', 1, 512, 5)")
        raise RuntimeError("boom")
    assert db.all("SELECT name FROM flavors") == []
    assert not db.db.conn.in_transaction
    with db.write() as w:  # the lock was released: the next writer proceeds
        w.execute("INSERT INTO flavors (name, vcpus, memory_mib, disk_gib) VALUES ('c', 1, 512, 5)")
    assert db.all("SELECT name FROM flavors") == [{"name": "c"}]


def test_write_commits_and_other_connections_see_it(db: Database, tmp_path: Path) -> None:
    with db.write() as w:
        w.execute("INSERT INTO flavors (name, vcpus, memory_mib, disk_gib) VALUES ('a', 1, 512, 5)")
    reader = Database(tmp_path / "inventory.db")
    assert reader.all("SELECT name FROM flavors") == [{"name": "a"}]
    reader.close()


def test_second_writer_waits_for_the_first(db: Database, tmp_path: Path) -> None:
    """Another process's writer waits (busy timeout) instead of failing with 'database is locked'."""
    other = Database(tmp_path / "inventory.db")
    done: list[float] = []

    def second_writer() -> None:
        try:
            with other.write() as w:
                w.execute("INSERT INTO flavors (name, vcpus, memory_mib, disk_gib) VALUES ('b', 1, 512, 5)")
            done.append(time.monotonic())
        finally:
            other.close()

    with db.write() as w:
        w.execute("INSERT INTO flavors (name, vcpus, memory_mib, disk_gib) VALUES ('a', 1, 512, 5)")
        t = threading.Thread(target=second_writer)
        t.start()
        time.sleep(0.3)
        assert not done  # still waiting for our transaction
        released = time.monotonic()
    t.join(10)
    assert done and done[0] >= released
    assert {r["name"] for r in db.all("SELECT name FROM flavors")} == {"a", "b"}


def test_check_constraints_guard_the_inventory(db: Database, rows: Inventory) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint"):
        rows.host("h1", state="sleeping")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK constraint"):
        rows.flavor("zero", vcpus=0)
    assert rows.count("hosts") == rows.count("flavors") == 0


# --- placement ----------------------------------------------------------------------------------


def test_place_picks_the_up_host_with_most_free_ram(db: Database, rows: Inventory) -> None:
    rows.host("h1", memory_mib=8192)
    rows.host("h2", memory_mib=16384)
    rows.host("h3", memory_mib=4096)
    assert place(db, SMALL)["name"] == "h2"


def test_place_counts_ram_already_given_to_vms(db: Database, rows: Inventory) -> None:
    h1 = rows.host("h1", memory_mib=8192)
    rows.host("h2", memory_mib=6144)
    rows.vm("big", 1, h1, memory_mib=4096)
    assert place(db, SMALL)["name"] == "h2"
    assert host_usage(db)[h1["id"]]["memory_mib"] == 4096


def test_place_skips_hosts_that_are_not_up(db: Database, rows: Inventory) -> None:
    rows.host("h1", memory_mib=65536, state="down")
    rows.host("h2", memory_mib=65536, state="maintenance")
    rows.host("h3", memory_mib=2048)
    assert place(db, SMALL)["name"] == "h3"


def test_place_respects_reserved_memory(db: Database, rows: Inventory) -> None:
    rows.host("h1", memory_mib=8192, reserved_memory_mib=6144)  # 2048 left
    rows.host("h2", memory_mib=4096)
    assert place(db, SMALL)["name"] == "h2"
    with pytest.raises(Conflict):
        place(db, Need(1, 4096, 10), "h1")  # 8192 - 6144 < 4096


def test_place_respects_ram_ratio(db: Database, rows: Inventory) -> None:
    rows.host("h1", memory_mib=4096, ram_ratio=2.0)  # 8192 allocatable
    rows.host("h2", memory_mib=6144)
    assert place(db, SMALL)["name"] == "h1"
    assert place(db, Need(1, 7000, 10))["name"] == "h1"  # more than h1 has, but within its overcommit
    assert free_capacity(db.one("SELECT * FROM hosts WHERE name = 'h1'") or {}, None)["memory_mib"] == 8192


def test_place_respects_cpu_ratio(db: Database, rows: Inventory) -> None:
    rows.host("h1", vcpus=2, cpu_ratio=1.0, memory_mib=65536)
    rows.host("h2", vcpus=2, cpu_ratio=4.0, memory_mib=8192)
    assert place(db, Need(4, 1024, 10))["name"] == "h2"


def test_place_raises_no_capacity(db: Database, rows: Inventory) -> None:
    with pytest.raises(Conflict) as empty:
        place(db, SMALL)
    assert empty.value.code == "no_capacity"
    rows.host("h1", memory_mib=2048)
    rows.host("h2", memory_mib=65536, state="down")
    with pytest.raises(Conflict) as info:
        place(db, Need(2, 4096, 10))
    assert info.value.code == "no_capacity"
    assert info.value.status == 409
    assert "no host has room for 2 vCPU / 4096 MiB" in info.value.message


def test_place_on_a_chosen_host(db: Database, rows: Inventory) -> None:
    rows.host("h1", memory_mib=4096)
    rows.host("h2", memory_mib=65536)
    h3 = rows.host("h3", state="down")
    assert place(db, SMALL, "h1")["name"] == "h1"
    with pytest.raises(Conflict, match="h3 is down"):
        place(db, SMALL, h3["id"])
    with pytest.raises(Conflict) as info:
        place(db, SMALL, "h9")
    assert info.value.code == "no_such_host"


def test_placements_in_sequence_see_each_other(db: Database, rows: Inventory) -> None:
    """Each host has room for one VM: two creates in a row must land on different hosts."""
    rows.host("h1", memory_mib=2048)
    rows.host("h2", memory_mib=2048)
    need = Need(1, 2048, 10)
    chosen = []
    for name in ("vm1", "vm2"):
        with db.write() as w:
            host = place(db, need)
            w.execute("INSERT INTO vms (id, name, owner_id, host_id, vcpus, memory_mib, disk_gib, hostname, state,"
                      " created_at, updated_at) VALUES (?, ?, 1, ?, 1, 2048, 10, ?, 'building', ?, ?)",
                      [str(uuid.uuid4()), name, host["id"], name, now(), now()])
            chosen.append(host["name"])
    assert sorted(chosen) == ["h1", "h2"]
    with pytest.raises(Conflict) as info, db.write():
        place(db, need)
    assert info.value.code == "no_capacity"


def test_concurrent_placements_do_not_overbook(db: Database, rows: Inventory) -> None:
    """Ten writers at once on two hosts with room for three VMs each: six succeed, four get no_capacity."""
    rows.host("h1", memory_mib=3072)
    rows.host("h2", memory_mib=3072)
    outcome: list[str] = []
    barrier = threading.Barrier(10)

    def create(i: int) -> None:
        barrier.wait()
        try:
            with db.write() as w:
                host = place(db, Need(1, 1024, 10))
                w.execute("INSERT INTO vms (id, name, owner_id, host_id, vcpus, memory_mib, disk_gib, hostname,"
                          " state, created_at, updated_at) VALUES (?, ?, 1, ?, 1, 1024, 10, 'x', 'building', ?, ?)",
                          [str(uuid.uuid4()), f"vm{i}", host["id"], now(), now()])
            outcome.append(host["name"])
        except Conflict as exc:
            outcome.append(exc.code)
        finally:
            db.close()

    threads = [threading.Thread(target=create, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcome) == ["h1"] * 3 + ["h2"] * 3 + ["no_capacity"] * 4
