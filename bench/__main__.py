"""`python -m bench [--quick] [--out DIR] [--update-docs]`: the seven measurements of issue 8 in one run."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from bench import report
from bench.api_load import count_vms, fixed_rate, sequential, sustained
from bench.baseline import Baseline, HandVm
from bench.creates import Labcloud, burst, create_to_ready, create_to_running, warm_up
from bench.env import PROFILES, BenchCloud, machine
from bench.footprint import FakeFleet, idle_footprint
from bench.inproc import scheduler_and_db
from bench.migration import live_migration
from bench.watch import StartWatch

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


@dataclass(frozen=True)
class Counts:
    """How much of each measurement a run does."""

    running_pairs: int = 16
    ready_pairs: int = 5
    burst_rounds: int = 3
    burst_size: int = 20
    migration_pairs: int = 5
    fake_hosts: int = 8
    vms: int = 500
    settle_s: float = 15
    idle_s: float = 60
    api_rate: float = 30
    api_s: float = 20
    sustained_s: float = 15
    sequential: int = 50
    placements: int = 2000
    creates: int = 200


QUICK = Counts(running_pairs=2, ready_pairs=1, burst_rounds=1, burst_size=4, migration_pairs=1, settle_s=5,
               idle_s=10, api_s=3, sustained_s=3, sequential=10, placements=200, creates=20)


def _section(sections: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> None:
    """Run one measurement; a failure is recorded in its section and the run goes on."""
    print(f"bench: {name} ...", flush=True)
    started = time.monotonic()
    try:
        sections[name] = fn()
    except Exception as exc:  # the run goes on; the section says what failed
        traceback.print_exc()
        sections[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print(f"bench: {name} done in {time.monotonic() - started:.0f} s", flush=True)


def run(profile_name: str, counts: Counts, out_dir: Path) -> dict[str, Any]:
    """Bring up the benchmark's lab cloud, measure everything, always take it down; return the results."""
    profile = PROFILES[profile_name]
    started, t0 = datetime.now(UTC), time.monotonic()
    meta: dict[str, Any] = {"started": started.isoformat(timespec="seconds"), "machine": machine(),
                            "counts": asdict(counts), "lab": {"prefix": profile.prefix, "cidr": profile.cidr}}
    sections: dict[str, Any] = {}
    # In process and before the lab is up, on the filesystem of the controller's data.
    _section(sections, "scheduler_db", lambda: scheduler_and_db(profile.controller_dir.parent, counts.vms,
                                                                counts.placements, counts.creates))
    bench = BenchCloud(profile, out_dir / "logs")
    watch = StartWatch()
    fleet: FakeFleet | None = None
    try:
        print(f"bench: bringing up lab {profile.prefix} ({profile.cidr}), controller and agents", flush=True)
        bench.start()
        print(f"bench: lab cloud up after {time.monotonic() - t0:.0f} s", flush=True)
        for host in bench.hosts:
            watch.attach(bench.conn(host))
        lc, bl = Labcloud(bench, watch), Baseline(bench)
        bl.install_base()
        warm_up(bench, lc, bl)
        _section(sections, "create_running", lambda: create_to_running(bench, lc, bl, counts.running_pairs))
        _section(sections, "burst", lambda: burst(bench, lc, bl, counts.burst_rounds, counts.burst_size))
        kept: list[tuple[str, HandVm]] = []

        def ready() -> dict[str, Any]:
            out, lc_name, hand = create_to_ready(bench, lc, bl, counts.ready_pairs)
            kept.append((lc_name, hand))
            return out

        _section(sections, "create_ready", ready)
        if kept:
            lc_name, hand = kept[0]
            _section(sections, "migration", lambda: live_migration(bench, bl, lc_name, hand, counts.migration_pairs))
            lc.destroy([lc_name])
            bl.remove(hand)
        else:
            sections["migration"] = {"error": "no guest of the last ready pair to migrate"}
        fleet = FakeFleet(bench, counts.fake_hosts, counts.vms)
        fleet.start()
        time.sleep(counts.settle_s)  # a few heartbeats from every host before the idle window
        api = bench.api

        def footprint() -> dict[str, Any]:
            assert fleet is not None and bench.cloud.controller is not None and fleet.hosts[0].proc is not None
            pids = {"controller": bench.cloud.controller.pid, "agent": bench.cloud.agents["h1"].pid,
                    "agent_test_driver": fleet.hosts[0].proc.pid}
            out = idle_footprint(pids, counts.idle_s)
            out.update(hosts=len(api.call("GET", "/hosts", expect=200).json()["hosts"]), vms=count_vms(api))
            return out

        _section(sections, "footprint", footprint)
        def api_load() -> dict[str, Any]:
            assert bench.cloud.controller is not None
            return {"vms": count_vms(api), "sequential": sequential(api, counts.sequential),
                    "fixed_rate": fixed_rate(api, counts.api_rate, counts.api_s),
                    "sustained": sustained(api, counts.sustained_s, bench.cloud.controller.pid)}

        _section(sections, "api", api_load)
    finally:
        print("bench: stopping the lab cloud", flush=True)
        watch.close()
        if fleet is not None:
            fleet.stop()
        bench.stop()
    meta.update(quick=counts == QUICK, duration_s=time.monotonic() - t0, loadavg_end=os.getloadavg(),
                finished=datetime.now(UTC).isoformat(timespec="seconds"))
    return {"meta": meta, "sections": sections}


def _render(source: Path, out_dir: Path, update_docs: bool) -> int:
    results = report.load(source)
    table = report.write(results, out_dir)
    print(report.text_table(table))
    if update_docs:
        report.update_docs(DOC, (out_dir / "performance.md").read_text(), out_dir / "chart.png")
        print(f"bench: updated {DOC}")
    return 0


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table; write results.json, chart.png, table.txt, performance.md."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="few iterations of everything (the smoke test)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/bench"), help="output directory (%(default)s)")
    parser.add_argument("--lab", choices=sorted(PROFILES), default="bench",
                        help="which benchmark lab: bench (lb, 10.214.0.0/24) or smoke (ls, 10.215.0.0/24)")
    parser.add_argument("--update-docs", action="store_true", help=f"put the table into {DOC}")
    parser.add_argument("--render", type=Path, metavar="RESULTS_JSON",
                        help="measure nothing: write the table, chart and Markdown of an earlier run's results.json")
    args = parser.parse_args(argv)
    if args.render:
        return _render(args.render, args.out, args.update_docs)
    if os.geteuid() != 0:
        print("bench: needs root (the lab: namespaces, libvirtd, bridges)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # Ctrl-C and SIGTERM both reach the finally that cleans up
    try:
        results = run(args.lab, QUICK if args.quick else Counts(), args.out)
    except KeyboardInterrupt:
        print("bench: interrupted; the lab was taken down", file=sys.stderr)
        return 130
    table = report.write(results, args.out)
    print()
    print(report.text_table(table))
    print(f"\nbench: wrote {args.out}/results.json, chart.png, table.txt, performance.md", flush=True)
    if args.update_docs:
        report.update_docs(DOC, (args.out / "performance.md").read_text(), args.out / "chart.png")
        print(f"bench: updated {DOC}")
    failed = [name for name, s in results["sections"].items() if "error" in s]
    if failed:
        print(f"bench: not measured: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
