"""Measurements 1-3: create to running, create to ready, and a burst of creates; each against the baseline.

Pairs are interleaved (labcloud, baseline, baseline, labcloud, ...) so that a change in
the machine's load hits both sides alike. Every VM of a run is removed before the next
run starts, so a booting guest never slows the next measurement down; where a guest
must stay (the last ready pair, for the migration), that is said.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.baseline import Baseline, HandVm
from bench.env import BENCH_PASSWORD, BenchCloud
from bench.stats import paired
from bench.watch import StartWatch
from lab.cloud import Api, CloudError

START_TIMEOUT = 180.0
READY_TIMEOUT = 420.0


@dataclass
class Labcloud:
    """The labcloud side: creates and destroys through the public API."""

    bench: BenchCloud
    watch: StartWatch

    def client(self) -> Api:
        """Return a new API client (one per thread: a requests session is not shared across threads)."""
        api = self.bench.api
        return Api(api.url, api.ca, api.token)

    def post(self, api: Api, name: str, ip: str, host: str | None = None, flavor: str = "small") -> str | None:
        """POST a create; return the task id, or None when it was refused."""
        body: dict[str, Any] = {"name": name, "image": "debian12", "flavor": flavor, "password": BENCH_PASSWORD,
                                "networks": [{"network": "lab", "ip": ip}]}
        if host:
            body["host"] = host
        resp = api.call("POST", "/vms", body)
        if resp.status_code != 202:
            print(f"bench: create {name} refused: HTTP {resp.status_code} {resp.text[:300]}", flush=True)
            return None
        task_id: str = resp.json()["task"]["id"]
        return task_id

    def finished(self, api: Api, task_id: str | None) -> dict[str, Any] | None:
        """Wait for a create task; return it when it succeeded, else None (and say why)."""
        if task_id is None:
            return None
        try:
            task = api.wait_task(task_id, timeout=600, poll=0.2)
        except CloudError as exc:
            print(f"bench: {exc}", flush=True)
            return None
        if task["state"] != "succeeded":
            print(f"bench: task {task_id} failed: {task['error']}", flush=True)
            return None
        return task

    def destroy(self, names: list[str]) -> None:
        """Destroy VMs through the API (in parallel) and wait until they are gone."""
        def one(name: str) -> None:
            api = self.client()
            resp = api.call("DELETE", f"/vms/{name}")
            if resp.status_code == 202:
                api.wait_task(resp.json()["task"]["id"], timeout=300, poll=0.2)
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(names)))) as pool:
            list(pool.map(one, names))


def warm_up(bench: BenchCloud, lc: Labcloud, bl: Baseline) -> None:
    """Create and remove one VM per host each way: caches the image, warms the page cache (not measured)."""
    api = lc.client()
    for index, host in enumerate(bench.hosts):
        name = f"lcw-{host.name}"
        task = lc.finished(api, lc.post(api, name, bench.vm_address(120 + index), host=host.name))
        if task is None:
            raise CloudError(f"the warm-up create on {host.name} failed; see the controller and agent logs")
        lc.destroy([name])
        vm = bl.prepare(f"blw-{host.name}", host, bench.vm_address(150 + index))
        _start, ok = bl.create(vm)
        bl.remove(vm)
        if not ok:
            raise CloudError(f"the baseline warm-up on {host.name} failed")


def create_to_running(bench: BenchCloud, lc: Labcloud, bl: Baseline, runs: int) -> dict[str, Any]:
    """Measurement 1: API request to libvirt's STARTED event, against overlay+seed+define+start."""
    api = lc.client()
    host = bench.host("h1")
    times: dict[str, list[float]] = {"labcloud": [], "baseline": []}
    failures = {"labcloud": 0, "baseline": 0}
    for i in range(runs):
        for side in ("labcloud", "baseline") if i % 2 == 0 else ("baseline", "labcloud"):
            if side == "labcloud":
                name = f"lcr-{i}"
                started = time.monotonic()
                task_id = lc.post(api, name, bench.vm_address(120), host="h1")
                seen = lc.watch.wait([name], START_TIMEOUT if task_id else 0)
                ok = lc.finished(api, task_id) is not None and name in seen
                lc.destroy([name])
            else:
                vm = bl.prepare(f"blr-{i}", host, bench.vm_address(150))
                started, ok = bl.create(vm)
                seen = lc.watch.wait([vm.name], START_TIMEOUT if ok else 0)
                ok = ok and vm.name in seen
                name = vm.name
                bl.remove(vm)
            if ok:
                times[side].append(seen[name] - started)
            else:
                failures[side] += 1
    out = paired(times["labcloud"], times["baseline"])
    out.update(failures=failures, runs=runs, host="h1", flavor="small")
    return out


def _wait_ssh(ip: str, timeout: float) -> float | None:
    """Return when TCP port 22 of ip first accepted a connection (at most timeout s), or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, 22), timeout=1.0):
                return time.monotonic()
        except OSError:
            time.sleep(0.2)
    return None


def create_to_ready(bench: BenchCloud, lc: Labcloud, bl: Baseline, runs: int) -> tuple[dict[str, Any], str, HandVm]:
    """Measurement 2: API request to TCP 22 answering on the static IP, against the baseline.

    The last pair of guests is kept running for the migration measurement; its
    names are returned with the result.
    """
    api = lc.client()
    host = bench.host("h1")
    times: dict[str, list[float]] = {"labcloud": [], "baseline": []}
    failures = {"labcloud": 0, "baseline": 0}
    kept_lc, kept_bl = "", None
    for i in range(runs):
        last = i == runs - 1
        for side in ("labcloud", "baseline") if i % 2 == 0 else ("baseline", "labcloud"):
            if side == "labcloud":
                name, ip = f"lcy-{i}", bench.vm_address(130 + i)
                started = time.monotonic()
                task_id = lc.post(api, name, ip, host="h1")
                ready = _wait_ssh(ip, READY_TIMEOUT) if task_id else None
                ok = lc.finished(api, task_id) is not None and ready is not None
                if last and ok:
                    kept_lc = name
                else:
                    lc.destroy([name])
            else:
                vm = bl.prepare(f"bly-{i}", host, bench.vm_address(180 + i))
                started, ok = bl.create(vm)
                ready = _wait_ssh(vm.ip, READY_TIMEOUT) if ok else None
                ok = ok and ready is not None
                if last and ok:
                    kept_bl = vm
                else:
                    bl.remove(vm)
            if ok and ready is not None:
                times[side].append(ready - started)
            else:
                failures[side] += 1
    out = paired(times["labcloud"], times["baseline"])
    out.update(failures=failures, runs=runs, host="h1", flavor="small")
    if not kept_lc or kept_bl is None:
        raise CloudError("no guest of the last ready pair came up; the migration cannot be measured")
    return out, kept_lc, kept_bl


def _offsets(seen: dict[str, float], started: float) -> list[float]:
    """Return when each domain started, in seconds after the burst began, in order."""
    return sorted(round(t - started, 3) for t in seen.values())


def _burst_labcloud(bench: BenchCloud, lc: Labcloud, round_no: int,
                    size: int) -> tuple[float | None, int, dict[str, int], list[float]]:
    names = [f"lcb{round_no}-{k}" for k in range(size)]

    def one(k: int) -> dict[str, Any] | None:
        api = lc.client()
        return lc.finished(api, lc.post(api, names[k], bench.vm_address(100 + k), flavor="tiny"))

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=size) as pool:
        tasks = list(pool.map(one, range(size)))
    seen = lc.watch.wait(names, START_TIMEOUT)
    per_host: dict[str, int] = {}
    for task in tasks:
        if task is not None:
            per_host[task["result"]["host"]] = per_host.get(task["result"]["host"], 0) + 1
    failed = sum(1 for name, task in zip(names, tasks, strict=True) if task is None or name not in seen)
    total = max(seen.values()) - started if seen and not failed else None
    lc.destroy(names)
    return total, failed, per_host, _offsets(seen, started)


def _burst_baseline(bench: BenchCloud, lc: Labcloud, bl: Baseline, round_no: int,
                    size: int) -> tuple[float | None, int, list[float]]:
    hosts = bench.hosts
    vms = [bl.prepare(f"blb{round_no}-{k}", hosts[k % len(hosts)], bench.vm_address(160 + k), memory_mib=128)
           for k in range(size)]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=size) as pool:
        results = list(pool.map(bl.create, vms))
    seen = lc.watch.wait([vm.name for vm in vms], START_TIMEOUT)
    failed = sum(1 for vm, (_t, ok) in zip(vms, results, strict=True) if not ok or vm.name not in seen)
    total = max(seen.values()) - started if seen and not failed else None
    for vm in vms:
        bl.remove(vm)
    return total, failed, _offsets(seen, started)


def burst(bench: BenchCloud, lc: Labcloud, bl: Baseline, rounds: int, size: int) -> dict[str, Any]:
    """Measurement 3: size creates at once across the lab hosts (tiny flavor), against size scripts at once."""
    times: dict[str, list[float]] = {"labcloud": [], "baseline": []}
    failures = {"labcloud": 0, "baseline": 0}
    placement: list[dict[str, int]] = []
    offsets: dict[str, list[list[float]]] = {"labcloud": [], "baseline": []}
    for r in range(rounds):
        for side in ("labcloud", "baseline") if r % 2 == 0 else ("baseline", "labcloud"):
            if side == "labcloud":
                total, failed, per_host, started = _burst_labcloud(bench, lc, r, size)
                placement.append(per_host)
            else:
                total, failed, started = _burst_baseline(bench, lc, bl, r, size)
            offsets[side].append(started)
            failures[side] += failed
            if total is not None:
                times[side].append(total)
    out = paired(times["labcloud"], times["baseline"])
    out.update(failures=failures, rounds=rounds, size=size, flavor="tiny", labcloud_placement=placement,
               start_offsets_s=offsets)
    return out
