"""The benchmark runs end to end in its quick form, so its code does not rot (issue 8).

It brings up a lab of its own (prefix ls, 10.215.0.0/24), distinct from the lab the
other end-to-end tests use and from a full benchmark run. Nothing about speed is
asserted: the goals are read in docs/performance.md, not enforced here.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
LIMIT_S = 900  # a quiet machine needs 4-6 minutes; guests boot slower when other tests load the CPU


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _paired(section: dict[str, Any], with_ratio: bool = True) -> list[Any]:
    both = [section["labcloud"]["median"], section["labcloud"]["p95"], section["baseline"]["median"],
            section["baseline"]["p95"]]
    return [*both, section["ratio"]] if with_ratio else both


def test_quick_benchmark_measures_all_seven(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = subprocess.Popen([sys.executable, "-m", "bench", "--quick", "--lab", "smoke", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # its finally takes its lab down
        output, _ = proc.communicate(timeout=180)
        pytest.fail(f"the quick benchmark took over {LIMIT_S} s:\n{output[-4000:]}")
    assert proc.returncode == 0, output[-4000:]
    assert "create -> running" in output  # the table was printed

    results = json.loads((out / "results.json").read_text())
    sections = results["sections"]
    assert set(sections) == {"create_running", "create_ready", "burst", "migration", "footprint", "api",
                             "scheduler_db"}
    assert all("error" not in s for s in sections.values()), {k: s.get("error") for k, s in sections.items()}
    figures = [
        *_paired(sections["create_running"]), *_paired(sections["create_ready"]), *_paired(sections["burst"]),
        *_paired(sections["migration"]["total"]),
        *_paired(sections["migration"]["downtime"], with_ratio=False),  # no ratio when the baseline lost no ping
        sections["footprint"]["controller"]["rss_mb"], sections["footprint"]["controller"]["cpu_pct"],
        sections["footprint"]["agent"]["rss_mb"], sections["footprint"]["agent"]["cpu_pct"],
        sections["api"]["sequential"]["median"], sections["api"]["fixed_rate"]["p95"],
        sections["api"]["sustained"]["requests_per_s"],
        sections["scheduler_db"]["placement_ms"]["p99"], sections["scheduler_db"]["create_db_ms"]["median"],
    ]
    assert all(_number(v) for v in figures), figures
    assert sections["footprint"]["hosts"] == 10 and sections["footprint"]["vms"] == 500
    assert sections["api"]["vms"] == 500
    assert [g["key"] for g in results["goals"]] == ["1", "2", "3", "4a", "4b", "5a", "5b", "6a", "6b", "7a", "7b"]
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| create -> running" in (out / "performance.md").read_text()
