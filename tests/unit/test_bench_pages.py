"""A smoke run of the page benchmark (bench/pages.py): it renders both pages and reports numbers, not speed."""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench import pages


def test_page_benchmark_reports_server_times(tmp_path: Path, capsys: object) -> None:
    assert pages.main(["--vms", "12", "--runs", "3", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "pages.json").read_text())
    assert result["vms"] == 12 and result["vm_rows_listed"] == 12
    assert set(result["pages"]) == {"vm_list", "dashboard"}
    for page in result["pages"].values():
        ms = page["ms"]
        assert ms["n"] == 3 and 0 < ms["median"] <= ms["p95"] <= ms["max"] and not math.isnan(ms["p95"])
        assert page["bytes"] > 1000 and page["goal_p95_ms"] == 100.0 and page["cpu_ms"]["n"] == 3
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "vm_list" in out and "dashboard" in out
