"""chart.png: each measurement in its own panel, labcloud beside the baseline or beside its goal."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to a file

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from bench.report import Row

LC, BL, GOAL = "#2b6cb0", "#a0aec0", "#c53030"


def _nan0(value: float) -> float:
    return 0.0 if math.isnan(value) else value


def _pair(ax: Axes, title: str, pair: dict[str, Any], unit: str) -> None:
    """Bars of the medians with the p95 as a whisker."""
    lc, bl = pair["labcloud"], pair["baseline"]
    medians = [_nan0(lc["median"]), _nan0(bl["median"])]
    upper = [max(0.0, _nan0(lc["p95"]) - medians[0]), max(0.0, _nan0(bl["p95"]) - medians[1])]
    ax.bar(["labcloud", "baseline"], medians, color=[LC, BL], yerr=[[0, 0], upper], capsize=6)
    ratio = pair["ratio"]
    ax.set_title(f"{title}\n{'' if math.isnan(ratio) else f'{ratio:.2f}x'}", fontsize=9)
    ax.set_ylabel(unit)
    for i, value in enumerate(medians):
        ax.annotate(f"{value:.3g}", (i, value), ha="center", va="bottom", fontsize=8)


def _goal(ax: Axes, title: str, labels: list[str], values: list[float], limit: float, unit: str,
          above: bool = False) -> None:
    """Bars against a goal line (a limit not to pass, or with above, a floor to reach)."""
    ax.bar(labels, [_nan0(v) for v in values], color=LC)
    ax.axhline(limit, color=GOAL, linestyle="--", linewidth=1)
    ax.annotate(f"goal {'>=' if above else '<='} {limit:g}", (0.02, limit), xycoords=("axes fraction", "data"),
                va="bottom", fontsize=7, color=GOAL)
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(unit)
    for i, value in enumerate(values):
        ax.annotate("not measured" if math.isnan(value) else f"{value:.3g}", (i, _nan0(value)), ha="center",
                    va="bottom", fontsize=8)


def _missing(ax: Axes, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _footprint(ax: Axes, f: dict[str, Any]) -> None:
    _goal(ax, "5 idle RSS (goals: controller 150, agent 50)", ["controller", "agent"],
          [f["controller"]["rss_mb"], f["agent"]["rss_mb"]], 150, "MB")
    ax.axhline(50, color=GOAL, linestyle=":", linewidth=1)


def chart(results: dict[str, Any], table: list[Row], path: Path) -> None:
    """Draw the eight panels and save them as a PNG."""
    s = results["sections"]
    fig, axes = plt.subplots(2, 4, figsize=(16, 8))
    panels: list[tuple[Axes, str, str, Callable[[Axes, dict[str, Any]], None]]] = [
        (axes[0][0], "create_running", "1 create -> running (median, p95)",
         lambda ax, d: _pair(ax, "1 create -> running (median, p95)", d, "s")),
        (axes[0][1], "create_ready", "2 create -> ready (TCP 22)",
         lambda ax, d: _pair(ax, "2 create -> ready (TCP 22)", d, "s")),
        (axes[0][2], "burst", "3 burst, total", lambda ax, d: _pair(ax, f"3 burst of {d['size']}, total", d, "s")),
        (axes[0][3], "migration", "4 live migration, total",
         lambda ax, d: _pair(ax, "4 live migration, total", d["total"], "s")),
        (axes[1][0], "migration", "4 live migration, ping downtime",
         lambda ax, d: _pair(ax, "4 live migration, ping downtime", d["downtime"], "s")),
        (axes[1][1], "footprint", "5 idle RSS", _footprint),
        (axes[1][2], "api", "6 GET /vms p95",
         lambda ax, d: _goal(ax, f"6 GET /vms, {d['vms']} VMs, at {d['fixed_rate']['rate']:.0f}/s", ["median", "p95"],
                             [d["fixed_rate"]["median"], d["fixed_rate"]["p95"]], 50, "ms")),
        (axes[1][3], "scheduler_db", "7 placement p99 / DB per create",
         lambda ax, d: _goal(ax, "7 placement p99 / DB per create", ["placement p99", "DB per create"],
                             [d["placement_ms"]["p99"], d["create_db_ms"]["median"]], 5, "ms")),
    ]
    for ax, name, title, draw in panels:
        section = s.get(name) or {"error": "not run"}
        if "error" in section:
            _missing(ax, title)
        else:
            draw(ax, section)
    met = sum(1 for r in table if r.met)
    meta = results["meta"]
    api = s.get("api") or {}
    rps = ""
    if "sustained" in api:
        rps = f"; sustained GET /vms {api['sustained']['requests_per_s']:.0f}/s (goal >=200/s)"
    fig.suptitle(f"labcloud vs the by-hand baseline: {met}/{len(table)} goals met "
                 f"({'quick' if meta['quick'] else 'full'} run, {meta['started']}){rps}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
