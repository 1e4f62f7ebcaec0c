"""IP address pools: an address is never handed out twice; exhaustion and release."""

from __future__ import annotations

import ipaddress
import sqlite3
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from controller import ipam
from controller.core import Core
from controller.db import Database, now
from controller.errors import BadRequest, Conflict
from tests.conftest import Inventory

N = 20


def insert_vm(db: Database, name: str, owner_id: int = 1) -> str:
    """Insert a bare VM row (joins the caller's transaction) and return its id."""
    vm_id = str(uuid.uuid4())
    db.db.execute(
        "INSERT INTO vms (id, name, owner_id, vcpus, memory_mib, disk_gib, hostname, state, created_at, updated_at)"
        " VALUES (?, ?, ?, 1, 512, 5, ?, 'running', ?, ?)", [vm_id, name, owner_id, name, now(), now()])
    return vm_id


def run_threads(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run work(i) in n threads started together; return results (or raise the first error)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return results


def held(db: Database, network_id: int) -> list[str]:
    """Return the addresses held in a network."""
    return [r["address"] for r in db.all("SELECT address FROM ip_allocations WHERE network_id = ?", [network_id])]


def test_concurrent_allocations_never_share_an_address(core: Core, inv: Inventory) -> None:
    net = inv.network("lan", range_=("10.0.0.10", "10.0.0.200"))

    def allocate(i: int) -> tuple[str, str]:
        try:
            with core.db.write():
                vm_id = insert_vm(core.db, f"vm{i}")
                return vm_id, ipam.allocate(core.db, net, vm_id)
        finally:
            core.db.close()  # this thread's connection

    results = run_threads(N, allocate)
    addresses = [a for _, a in results]
    assert len(set(addresses)) == N, sorted(addresses)
    assert sorted(held(core.db, net["id"]), key=ipaddress.ip_address) == sorted(addresses, key=ipaddress.ip_address)
    # Lowest free first: twenty writers fill the first twenty addresses of the range, no holes.
    assert {ipaddress.ip_address(a) for a in addresses} == {ipaddress.ip_address("10.0.0.10") + k for k in range(N)}
    owners = {r["address"]: r["vm_id"] for r in core.db.all("SELECT address, vm_id FROM ip_allocations")}
    assert all(owners[a] == vm_id for vm_id, a in results)


def test_separate_connections_never_share_an_address(core: Core, inv: Inventory, config: Any) -> None:
    """Two processes (each with its own Database and lock) are serialised by SQLite itself."""
    net = inv.network("lan", range_=("10.0.0.10", "10.0.0.200"))

    def allocate(i: int) -> str:
        db = Database(config.db_path)
        try:
            with db.write():
                return ipam.allocate(db, net, insert_vm(db, f"p{i}"))
        finally:
            db.close()

    addresses = run_threads(10, allocate)
    assert len(set(addresses)) == 10


def test_unique_constraint_holds_whatever_the_code_does(core: Core, inv: Inventory) -> None:
    net = inv.network("lan")
    with core.db.write():
        vm_id = insert_vm(core.db, "vm1")
        ipam.allocate(core.db, net, vm_id, "10.0.0.20")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"), core.db.write() as w:
        w.execute("INSERT INTO ip_allocations (network_id, address, vm_id, allocated_at) VALUES (?, ?, ?, ?)",
                  [net["id"], "10.0.0.20", vm_id, now()])


def test_concurrent_creates_through_the_api_hold_distinct_addresses(app: Flask, core: Core, inv: Inventory,
                                                                  auth: dict[str, str], wait: Any) -> None:
    inv.host("h1", vcpus=16, memory_mib=64 * 1024)
    inv.image("debian")
    inv.flavor("small")
    net = inv.network("lan", range_=("10.0.0.10", "10.0.0.200"))
    # Occupy every task worker so the create tasks stay queued and their addresses stay held.
    gate = threading.Event()
    blockers = []
    for _ in range(core.config.task_workers):
        task_id = core.tasks.create("test.block", 1)
        core.tasks.submit(task_id, lambda _ctx: gate.wait(30) and None)
        blockers.append(task_id)
    try:
        def create(i: int) -> dict[str, Any]:
            try:
                resp = app.test_client().post("/api/v1/vms", headers=auth, json={
                    "name": f"vm{i}", "image": "debian", "flavor": "small", "networks": [{"network": "lan"}]})
                assert resp.status_code == 202, resp.get_json()
                return dict(resp.get_json()["task"])
            finally:
                core.db.close()

        tasks = run_threads(N, create)
        addresses = held(core.db, net["id"])
        assert len(addresses) == N and len(set(addresses)) == N, sorted(addresses)
        nics = core.db.all("SELECT address FROM vm_nics")
        assert sorted(n["address"] for n in nics) == sorted(addresses)
        assert all(t["state"] in ("pending", "running") for t in (core.tasks.get(t["id"]) for t in tasks))
    finally:
        gate.set()
    for task_id in blockers:
        wait(task_id)
    # No agent answers, so every create fails and gives its address back.
    for task in tasks:
        assert wait(task["id"])["state"] == "failed"
    assert held(core.db, net["id"]) == []
    assert inv.count("vms") == 0


def test_exhausted_range_is_a_conflict(core: Core, inv: Inventory) -> None:
    net = inv.network("tiny", range_=("10.0.0.10", "10.0.0.12"))
    with core.db.write():
        got = [ipam.allocate(core.db, net, insert_vm(core.db, f"vm{i}")) for i in range(3)]
    assert got == ["10.0.0.10", "10.0.0.11", "10.0.0.12"]
    with pytest.raises(Conflict, match=r"network tiny has no free address in 10\.0\.0\.10-10\.0\.0\.12") as info, \
            core.db.write():
        ipam.allocate(core.db, net, insert_vm(core.db, "vm3"))
    assert info.value.status == 409
    assert inv.count("vms") == 3  # the failed transaction left nothing behind


def test_exhausted_range_through_the_api(client: Any, inv: Inventory, auth: dict[str, str]) -> None:
    host = inv.host("h1")
    inv.image("debian")
    inv.flavor("small")
    net = inv.network("tiny", range_=("10.0.0.10", "10.0.0.11"))
    inv.vm("a", 1, host, network=net)
    inv.vm("b", 1, host, network=net)
    before = inv.counts()
    resp = client.post("/api/v1/vms", headers=auth, json={"name": "c", "image": "debian", "flavor": "small",
                                                          "networks": [{"network": "tiny"}]})
    assert resp.status_code == 409
    assert "no free address" in resp.get_json()["error"]["message"]
    assert inv.counts() == before


def test_gateway_is_never_handed_out(core: Core, inv: Inventory) -> None:
    net = inv.network("lan", range_=("10.0.0.1", "10.0.0.3"), gateway="10.0.0.2")
    with core.db.write():
        got = [ipam.allocate(core.db, net, insert_vm(core.db, f"vm{i}")) for i in range(2)]
    assert got == ["10.0.0.1", "10.0.0.3"]


def test_network_and_broadcast_addresses_are_never_handed_out(core: Core, inv: Inventory) -> None:
    """A range that covers the whole CIDR must not hand out .0 or .255.

    Either the definition is refused (400) or allocation skips those two addresses.
    """
    body = {"name": "whole", "bridge": "br0", "cidr": "10.1.0.0/30", "range": ["10.1.0.0", "10.1.0.3"]}
    try:
        row = ipam.validate_network(body)
    except BadRequest:
        return
    row["created_at"] = now()
    with core.db.write() as w:
        cur = w.execute(f"INSERT INTO networks ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",  # noqa: S608
                        list(row.values()))
    net = core.db.one("SELECT * FROM networks WHERE id = ?", [cur.lastrowid]) or {}
    got = []
    with core.db.write():
        for i in range(4):
            try:
                got.append(ipam.allocate(core.db, net, insert_vm(core.db, f"vm{i}")))
            except Conflict:
                break
    assert "10.1.0.0" not in got and "10.1.0.3" not in got, got


def test_release_vm_frees_its_addresses(core: Core, inv: Inventory) -> None:
    lan = inv.network("lan")
    san = inv.network("san", cidr="10.2.0.0/24", range_=("10.2.0.10", "10.2.0.20"), gateway=None)
    with core.db.write():
        first, second = insert_vm(core.db, "vm1"), insert_vm(core.db, "vm2")
        assert ipam.allocate(core.db, lan, first) == "10.0.0.10"
        assert ipam.allocate(core.db, san, first) == "10.2.0.10"
        assert ipam.allocate(core.db, lan, second) == "10.0.0.11"
    assert ipam.release_vm(core.db, first) == 2
    assert ipam.release_vm(core.db, first) == 0
    assert held(core.db, lan["id"]) == ["10.0.0.11"] and held(core.db, san["id"]) == []
    with core.db.write():
        # The freed address is the lowest free one again.
        assert ipam.allocate(core.db, lan, insert_vm(core.db, "vm3")) == "10.0.0.10"


def test_deleting_a_vm_releases_its_addresses(core: Core, inv: Inventory) -> None:
    net = inv.network("lan")
    vm = inv.vm("vm1", 1, None, network=net, ip="10.0.0.77")
    assert held(core.db, net["id"]) == ["10.0.0.77"]
    with core.db.write() as w:
        w.execute("DELETE FROM vms WHERE id = ?", [vm["id"]])
    assert held(core.db, net["id"]) == []
    assert inv.count("vm_nics") == 0


def test_requested_address_outside_the_range_but_inside_the_cidr_is_allowed(core: Core, inv: Inventory) -> None:
    net = inv.network("lan", range_=("10.0.0.10", "10.0.0.20"))
    with core.db.write():
        assert ipam.allocate(core.db, net, insert_vm(core.db, "vm1"), "10.0.0.250") == "10.0.0.250"


def test_addresses_endpoint_lists_holders(client: Any, inv: Inventory, auth: dict[str, str]) -> None:
    net = inv.network("lan")
    vm = inv.vm("vm1", 1, None, network=net, ip="10.0.0.42")
    for ref in ("lan", str(net["id"])):
        rows = client.get(f"/api/v1/networks/{ref}/addresses", headers=auth).get_json()["addresses"]
        assert [(r["address"], r["vm_id"], r["vm_name"]) for r in rows] == [("10.0.0.42", vm["id"], "vm1")]
