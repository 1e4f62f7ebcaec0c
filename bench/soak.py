"""`python -m bench.soak [--cycles 100] [--out FILE]`: create/destroy cycles, and how the processes' memory grows.

Runs on a lab of its own (profile ``soak``: prefix ``lk``, 10.216.0.0/24), never the test lab. After a
few warm-up cycles (image cached on both hosts, code paths imported) it records the resident set size
(VmRSS) of the controller and of each agent, runs the cycles (create a tiny VM on h1, then h2, …, wait for its task,
destroy it, wait), samples RSS every few cycles, and reports the growth from the baseline to the end.
The goal is under 10 %. Not a test: it prints a summary and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.env import PROFILES, BenchCloud, BenchError, machine
from bench.footprint import _rss_bytes

GOAL_PCT = 10.0
WARMUP = 5


def _pids(bench: BenchCloud) -> dict[str, int]:
    cloud = bench.cloud
    if cloud.controller is None:
        raise BenchError("the controller is not running")
    pids = {"controller": cloud.controller.pid}
    pids.update({f"agent-{name}": proc.pid for name, proc in cloud.agents.items()})
    return pids


def _rss(pids: dict[str, int]) -> dict[str, float]:
    """Return each process's VmRSS in MB (10^6 bytes)."""
    return {key: round(_rss_bytes(pid) / 1e6, 2) for key, pid in pids.items()}


def _cycle(bench: BenchCloud, name: str, host: str) -> float:
    """Create one tiny VM on a host and destroy it; return the seconds it took."""
    api = bench.api
    started = time.monotonic()
    body = {"name": name, "image": "debian12", "flavor": "tiny", "networks": [{"network": "lab"}], "host": host}
    task = api.call("POST", "/vms", body, expect=202).json()["task"]
    done = api.wait_task(task["id"], timeout=600, poll=0.2)
    if done["state"] != "succeeded":
        raise BenchError(f"create of {name} failed: {done['error']}")
    task = api.call("DELETE", f"/vms/{name}", expect=202).json()["task"]
    done = api.wait_task(task["id"], timeout=600, poll=0.2)
    if done["state"] != "succeeded":
        raise BenchError(f"destroy of {name} failed: {done['error']}")
    return time.monotonic() - started


def soak(bench: BenchCloud, cycles: int, sample_every: int = 10, settle_s: float = 5.0) -> dict[str, Any]:
    """Run warm-up and measured cycles; return baseline, samples, final RSS and growth per process."""
    hosts = [h.name for h in bench.hosts]  # alternate, so that every agent works (placement alone picks h1)
    for i in range(WARMUP):
        _cycle(bench, f"soak-warm-{i}", hosts[i % len(hosts)])
    time.sleep(settle_s)
    pids = _pids(bench)
    baseline = _rss(pids)
    samples = [{"cycle": 0, "rss_mb": baseline}]
    durations = []
    for i in range(1, cycles + 1):
        durations.append(_cycle(bench, f"soak-{i}", hosts[i % len(hosts)]))
        if i % sample_every == 0 or i == cycles:
            samples.append({"cycle": i, "rss_mb": _rss(pids)})
            print(f"soak: {i}/{cycles} cycles, RSS MB {samples[-1]['rss_mb']}", flush=True)
    time.sleep(settle_s)
    final = _rss(pids)
    growth = {key: round(100.0 * (final[key] - baseline[key]) / baseline[key], 2) for key in pids}
    vms = bench.api.call("GET", "/vms", expect=200).json()["vms"]
    return {
        "cycles": cycles, "warmup_cycles": WARMUP, "pids": pids, "baseline_rss_mb": baseline, "final_rss_mb": final,
        "growth_pct": growth, "goal_pct": GOAL_PCT, "within_goal": all(g < GOAL_PCT for g in growth.values()),
        "samples": samples, "cycle_s": {"mean": round(sum(durations) / len(durations), 2),
                                        "max": round(max(durations), 2)},
        "vms_left": len(vms),
    }


def main(argv: list[str] | None = None) -> int:
    """Bring up the soak lab, run the cycles, write JSON, take the lab down."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=100, help="measured create/destroy cycles (%(default)s)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/soak.json"), help="JSON output (%(default)s)")
    args = parser.parse_args(argv)
    if args.cycles < 1:
        parser.error("--cycles must be at least 1")
    bench = BenchCloud(PROFILES["soak"], args.out.parent / "soak-logs")
    started = datetime.now(UTC)
    try:
        bench.start()
        result = soak(bench, args.cycles)
    finally:
        bench.stop()
    result.update(started_at=started.isoformat(timespec="seconds"), machine=machine(),
                  duration_s=round((datetime.now(UTC) - started).total_seconds(), 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for key, pct in result["growth_pct"].items():
        print(f"soak: {key}: {result['baseline_rss_mb'][key]} -> {result['final_rss_mb'][key]} MB ({pct:+.1f} %)")
    print(f"soak: {'within' if result['within_goal'] else 'OVER'} the {GOAL_PCT:g} % goal; wrote {args.out}")
    return 0 if result["within_goal"] else 1


if __name__ == "__main__":
    sys.exit(main())
