"""Measurement 4: live migration through labcloud against `virsh migrate` with the same flags.

Both guests (kept from the last ready pair) migrate back and forth between the two
lab hosts, interleaved. Total time is labcloud's request to its task succeeding
(polled every 0.1 s) against the hand-made destination preparation plus `virsh
migrate` plus removing the source's copies. Downtime is the pings lost while a
`ping -i 0.2` runs from the lab switch, times 0.2 s.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from typing import Any

import libvirt

from bench.baseline import Baseline, HandVm
from bench.env import BenchCloud, BenchError
from bench.stats import paired
from lab.cloud import Api

PING_INTERVAL = 0.2
PING_MAX_S = 900  # ping's own deadline, should anything fail to stop it
ANSWER_AFTER_S = 60  # how long a guest may take to answer again after its migration


class Pinger:
    """Pings an address every 0.2 s from the lab switch until stopped."""

    def __init__(self, address: str) -> None:
        self.proc = subprocess.Popen(["ping", "-n", "-i", str(PING_INTERVAL), "-W", "1", "-w", str(PING_MAX_S),
                                      address], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> tuple[float, int]:
        """Stop pinging; return (seconds of lost answers, packets sent)."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=10)
        found = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        if not found:
            raise BenchError(f"could not read ping's summary: {out[-300:]}")
        sent, received = int(found.group(1)), int(found.group(2))
        return (sent - received) * PING_INTERVAL, sent


def _answers_ping(address: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["ping", "-n", "-c", "1", "-W", "1", address], capture_output=True,
                          check=False).returncode == 0:
            return True
        time.sleep(0.5)
    return False


def _libvirt_downtime_ms(bench: BenchCloud, host: str, name: str) -> float | None:
    """Return the downtime libvirt measured for the migration that just ended (destination's job stats)."""
    try:
        dom = bench.conn(bench.host(host)).lookupByName(name)
        stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError:
        return None
    value = stats.get("downtime")
    return float(value) if value is not None else None


def _lc_migrate(api: Api, name: str, dest: str) -> float:
    started = time.monotonic()
    resp = api.call("POST", f"/vms/{name}/migrate", {"host": dest, "live": True})
    if resp.status_code != 202:
        raise BenchError(f"migrate {name} refused: HTTP {resp.status_code} {resp.text[:300]}")
    task = api.wait_task(resp.json()["task"]["id"], timeout=900, poll=0.1)
    elapsed = time.monotonic() - started
    if task["state"] != "succeeded":
        raise BenchError(f"migration of {name} failed: {task['error']}")
    return elapsed


def _diagnose(bench: BenchCloud, host: str, name: str) -> str:
    """Say what libvirt knows of a guest that stopped answering (for the log and results.json)."""
    try:
        dom = bench.conn(bench.host(host)).lookupByName(name)
        state, reason = dom.state()
        return f"on {host}: libvirt state {state} reason {reason}, active {dom.isActive()}"
    except libvirt.libvirtError as exc:
        return f"on {host}: {exc.get_error_message()}"


def live_migration(bench: BenchCloud, bl: Baseline, lc_name: str, hand: HandVm, pairs: int) -> dict[str, Any]:
    """Migrate both guests back and forth pairs times; return total-time and downtime pairs.

    The pings run from 2 s before a migration until the guest has answered again after it
    (at most ANSWER_AFTER_S), so a slow return counts in the downtime. A guest that does
    not answer again is a failure, and its side stops there.
    """
    api = bench.api
    lc_vm = api.call("GET", f"/vms/{lc_name}", expect=200).json()["vm"]
    hosts = {"labcloud": lc_vm["host"]["name"], "baseline": hand.host.name}
    ips = {"labcloud": lc_vm["ips"][0], "baseline": hand.ip}
    doms = {"labcloud": lc_name, "baseline": hand.name}
    total: dict[str, list[float]] = {"labcloud": [], "baseline": []}
    down: dict[str, list[float]] = {"labcloud": [], "baseline": []}
    libvirt_down: dict[str, list[float]] = {"labcloud": [], "baseline": []}
    failures = {"labcloud": 0, "baseline": 0}
    runs: list[dict[str, Any]] = []
    lost_sides: set[str] = set()
    names = [h.name for h in bench.hosts]
    for i in range(pairs):
        for side in ("labcloud", "baseline") if i % 2 == 0 else ("baseline", "labcloud"):
            if side in lost_sides:
                failures[side] += 1
                continue
            source = hosts[side]
            dest = next(n for n in names if n != source)
            run: dict[str, Any] = {"pair": i, "side": side, "from": source, "to": dest}
            runs.append(run)
            if not _answers_ping(ips[side]):
                run["error"] = f"no answer before the migration; {_diagnose(bench, source, doms[side])}"
                print(f"bench: {side} guest {ips[side]}: {run['error']}", flush=True)
                failures[side] += 1
                lost_sides.add(side)
                continue
            pinger = Pinger(ips[side])
            time.sleep(2)
            try:
                if side == "labcloud":
                    elapsed = _lc_migrate(api, lc_name, dest)
                else:
                    elapsed = bl.migrate(hand, bench.host(dest))
            except BenchError as exc:
                run["error"] = str(exc)
                print(f"bench: {exc}", flush=True)
                failures[side] += 1
                pinger.stop()
                continue
            hosts[side] = dest
            back = _answers_ping(ips[side], ANSWER_AFTER_S)
            time.sleep(1)
            lost, _sent = pinger.stop()
            run.update(total_s=elapsed, downtime_s=lost,
                       libvirt_downtime_ms=_libvirt_downtime_ms(bench, dest, doms[side]))
            if not back:
                run["error"] = f"no answer within {ANSWER_AFTER_S} s after the migration; " \
                               f"{_diagnose(bench, dest, doms[side])}"
                print(f"bench: {side} guest {ips[side]}: {run['error']}", flush=True)
                failures[side] += 1
                lost_sides.add(side)
                continue
            total[side].append(elapsed)
            down[side].append(lost)
            if run["libvirt_downtime_ms"] is not None:
                libvirt_down[side].append(run["libvirt_downtime_ms"])
    return {"total": paired(total["labcloud"], total["baseline"]),
            "downtime": paired(down["labcloud"], down["baseline"]),
            "libvirt_downtime_ms": paired(libvirt_down["labcloud"], libvirt_down["baseline"]),
            "failures": failures, "pairs": pairs, "flavor": "small", "storage": "local (copy-storage-inc)",
            "ping_interval_s": PING_INTERVAL, "runs": runs, "guests": doms}
