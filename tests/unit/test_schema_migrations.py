"""Forward-only schema migrations: every earlier schema version migrates to the latest, keeping its data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.db import Database, _migrations

VERSIONS = [version for version, _sql in _migrations()]
LATEST = VERSIONS[-1]
HOST = "0b4ec8a8-1111-4c3a-9d1c-000000000001"
VM = "0b4ec8a8-2222-4c3a-9d1c-000000000002"

# Rows a running cloud holds, by the schema version that introduced their table. Only columns of
# the table's first version are named, so the same rows fit every later version.
ROWS: dict[int, list[tuple[str, dict[str, Any]]]] = {
    1: [
        ("users", {"id": 1, "username": "admin", "password_hash": "h", "role": "admin", "created_at": "t0"}),
        ("users", {"id": 2, "username": "alice", "password_hash": "h", "role": "member", "created_at": "t0"}),
        ("api_tokens", {"user_id": 2, "name": "cli", "token_hash": "th", "created_at": "t0"}),
        ("join_tokens", {"token_hash": "jh", "created_by": 1, "created_at": "t0", "expires_at": "t9",
                         "used_at": "t1", "host_id": HOST}),
        ("hosts", {"id": HOST, "name": "h1", "address": "10.0.0.11", "agent_port": 8472, "state": "up",
                   "cert_fingerprint": "fp", "vcpus": 4, "memory_mib": 8192, "facts": '{"vcpus": 4}',
                   "last_seen": "t1", "joined_at": "t0"}),
        ("images", {"id": "img1", "name": "debian12", "source_format": "qcow2", "sha256": "ab" * 32,
                    "state": "available", "created_at": "t0"}),
        ("flavors", {"id": 1, "name": "small", "vcpus": 1, "memory_mib": 512, "disk_gib": 4}),
        ("networks", {"id": 1, "name": "lab", "bridge": "br0", "cidr": "10.0.0.0/24", "gateway": "10.0.0.1",
                      "range_start": "10.0.0.100", "range_end": "10.0.0.199", "created_at": "t0"}),
        ("vms", {"id": VM, "name": "vm1", "owner_id": 2, "host_id": HOST, "image_id": "img1", "flavor_id": 1,
                 "vcpus": 1, "memory_mib": 512, "disk_gib": 4, "hostname": "vm1", "state": "running",
                 "domain_xml": "<domain/>", "created_at": "t0", "updated_at": "t1"}),
        ("vm_nics", {"vm_id": VM, "idx": 0, "network_id": 1, "mac": "52:54:00:00:00:01", "address": "10.0.0.100"}),
        ("ip_allocations", {"network_id": 1, "address": "10.0.0.100", "vm_id": VM, "allocated_at": "t0"}),
        ("tasks", {"id": "task1", "kind": "vm.create", "state": "succeeded", "progress": 100, "request_id": "r1",
                   "user_id": 2, "vm_id": VM, "vm_name": "vm1", "host_id": HOST, "created_at": "t0"}),
        ("events", {"at": "t0", "username": "alice", "action": "vm.create", "object_type": "vm", "object_id": VM,
                    "result": "ok"}),
    ],
    4: [
        ("unmanaged_domains", {"uuid": "0b4ec8a8-3333-4c3a-9d1c-000000000003", "host_id": HOST, "name": "byhand",
                               "state": "running", "first_seen": "t0", "last_seen": "t1"}),
    ],
}


def _insert_rows(db: Database, version: int) -> None:
    with db.write() as w:
        for introduced in sorted(ROWS):
            if introduced > version:
                continue
            for table, row in ROWS[introduced]:
                w.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",  # noqa: S608
                          list(row.values()))


def _tables(db: Database) -> list[str]:
    return [r["name"] for r in db.all("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]


def _dump(db: Database) -> dict[str, list[dict[str, Any]]]:
    return {t: db.all(f"SELECT * FROM {t} ORDER BY rowid") for t in _tables(db)}  # noqa: S608 - our tables


def _schema(db: Database) -> dict[str, Any]:
    """Everything that makes a schema: columns, indexes, foreign keys, and the stored SQL."""
    out: dict[str, Any] = {"master": db.all("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")}
    for table in _tables(db):
        out[table] = {
            "columns": db.all(f"PRAGMA table_info({table})"),
            "indexes": sorted(db.all(f"PRAGMA index_list({table})"), key=lambda r: r["name"]),
            "foreign_keys": db.all(f"PRAGMA foreign_key_list({table})"),
        }
    return out


def test_every_version_has_a_migration_numbered_in_order() -> None:
    assert VERSIONS == sorted(set(VERSIONS))
    assert VERSIONS[0] == 1


@pytest.mark.parametrize("start", VERSIONS[:-1] or [LATEST])
def test_migrating_from_an_earlier_version_keeps_data_and_reaches_the_fresh_schema(tmp_path: Path,
                                                                                   start: int) -> None:
    old = Database(tmp_path / "old.db")
    assert old.migrate(target=start) == start
    assert old.one("PRAGMA user_version") == {"user_version": start}
    _insert_rows(old, start)
    before = _dump(old)
    old.close()

    migrated = Database(tmp_path / "old.db")  # as the next controller version opens it
    assert migrated.migrate() == LATEST
    after = _dump(migrated)
    for table, rows in before.items():
        assert len(after[table]) == len(rows), table
        for old_row, new_row in zip(rows, after[table], strict=True):
            assert {k: new_row[k] for k in old_row} == old_row, table  # new columns may be added, none changed
    assert migrated.all("PRAGMA foreign_key_check") == []
    assert migrated.one("PRAGMA integrity_check") == {"integrity_check": "ok"}

    fresh = Database(tmp_path / "fresh.db")
    fresh.migrate()
    assert _schema(migrated) == _schema(fresh)
    _insert_rows(fresh, LATEST)  # the latest rows fit a migrated database as well as a fresh one
    migrated.close()
    fresh.close()


def test_migrating_the_latest_version_again_changes_nothing(tmp_path: Path) -> None:
    db = Database(tmp_path / "inv.db")
    db.migrate()
    _insert_rows(db, LATEST)
    before, schema = _dump(db), _schema(db)
    assert db.migrate() == LATEST
    assert (_dump(db), _schema(db)) == (before, schema)
    db.close()
