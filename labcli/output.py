"""How the CLI prints: tables, key/value details, JSON, and the progress of a task."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from typing import Any, TextIO

Column = tuple[str, Callable[[dict[str, Any]], Any]]


def print_json(data: Any, out: TextIO) -> None:
    """Print the API's JSON, indented."""
    out.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def cell(value: Any) -> str:
    """Render one value for a table: '-' for nothing, lists comma-separated."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(cell(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """Return rows as an aligned text table with an upper-case header line."""
    grid = [[title for title, _ in columns]] + [[cell(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(r[i]) for r in grid) for i in range(len(columns))]
    return "".join("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in grid)


def details(pairs: Sequence[tuple[str, Any]]) -> str:
    """Return 'key: value' lines with the values aligned."""
    width = max(len(k) for k, _ in pairs) + 1
    return "".join(f"{(k + ':').ljust(width)} {cell(v)}\n" for k, v in pairs)


VM_COLUMNS: list[Column] = [
    ("NAME", lambda v: v["name"]), ("STATE", lambda v: v["state"]),
    ("HOST", lambda v: (v.get("host") or {}).get("name")), ("VCPUS", lambda v: v["vcpus"]),
    ("MEMORY_MIB", lambda v: v["memory_mib"]), ("IPS", lambda v: v.get("ips")), ("OWNER", lambda v: v.get("owner")),
]
HOST_COLUMNS: list[Column] = [
    ("NAME", lambda h: h["name"]), ("STATE", lambda h: h["state"]), ("ADDRESS", lambda h: h["address"]),
    ("VCPUS", lambda h: h["vcpus"]), ("MEMORY_MIB", lambda h: h["memory_mib"]),
    ("FREE_VCPUS", lambda h: (h.get("free") or {}).get("vcpus")),
    ("FREE_MEMORY_MIB", lambda h: (h.get("free") or {}).get("memory_mib")),
    ("FREE_DISK_GIB", lambda h: (h.get("free") or {}).get("disk_gib")),
]
IMAGE_COLUMNS: list[Column] = [
    ("NAME", lambda i: i["name"]), ("STATE", lambda i: i["state"]), ("OS", lambda i: i.get("os")),
    ("SIZE_MIB", lambda i: round((i.get("size_bytes") or 0) / 2**20)),
    ("VIRTUAL_GIB", lambda i: round((i.get("virtual_size_bytes") or 0) / 2**30, 1)),
]
FLAVOR_COLUMNS: list[Column] = [
    ("NAME", lambda f: f["name"]), ("VCPUS", lambda f: f["vcpus"]), ("MEMORY_MIB", lambda f: f["memory_mib"]),
    ("DISK_GIB", lambda f: f["disk_gib"]),
]
NETWORK_COLUMNS: list[Column] = [
    ("NAME", lambda n: n["name"]), ("BRIDGE", lambda n: n["bridge"]), ("CIDR", lambda n: n["cidr"]),
    ("GATEWAY", lambda n: n.get("gateway")), ("RANGE", lambda n: "-".join(n.get("range") or [])),
    ("VLAN", lambda n: n.get("vlan_id")),
]
TASK_COLUMNS: list[Column] = [
    ("ID", lambda t: t["id"]), ("KIND", lambda t: t["kind"]), ("VM", lambda t: t.get("vm_name")),
    ("STATE", lambda t: t["state"]), ("PROGRESS", lambda t: f"{t['progress']}%"),
    ("MESSAGE", lambda t: t.get("error") or t.get("message")), ("CREATED", lambda t: t.get("created_at")),
]


def vm_details(vm: dict[str, Any]) -> str:
    """Return one VM as 'key: value' lines, one line per NIC and disk."""
    pairs: list[tuple[str, Any]] = [
        ("name", vm["name"]), ("id", vm["id"]), ("state", vm["state"]),
        ("host", (vm.get("host") or {}).get("name")), ("owner", vm.get("owner")), ("vcpus", vm["vcpus"]),
        ("memory_mib", vm["memory_mib"]), ("disk_gib", vm.get("disk_gib")), ("image", vm.get("image")),
        ("flavor", vm.get("flavor")), ("hostname", vm.get("hostname")),
    ]
    for nic in vm.get("nics") or []:
        pairs.append((f"nic{nic['idx']}", f"{nic.get('network')} {nic.get('address') or '-'} {nic.get('mac')}"))
    for disk in vm.get("disks") or []:
        pairs.append((f"disk {disk['name']}", f"{disk.get('size_gib')} GiB"
                      + (f" on {disk['backing_image']}" if disk.get("backing_image") else "")))
    pairs += [("created_at", vm.get("created_at")), ("updated_at", vm.get("updated_at"))]
    return details(pairs)


class Progress:
    """Shows a task's progress on a stream: a redrawn bar on a terminal, a line per change elsewhere."""

    WIDTH = 30

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.last: tuple[Any, ...] | None = None
        self.drawn = 0

    def update(self, task: dict[str, Any]) -> None:
        """Show the task's state, progress and message if they changed."""
        progress = int(task.get("progress") or 0)
        message = task.get("error") if task["state"] == "failed" else task.get("message")
        key = (task["state"], progress, message)
        if key == self.last:
            return
        self.last = key
        filled = self.WIDTH * progress // 100
        bar = f"{task['kind']} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {progress:3d}% {message or ''}"
        if self.tty:
            columns = shutil.get_terminal_size().columns
            bar = bar[: columns - 1]
            self.out.write("\r" + bar.ljust(self.drawn))
            self.drawn = len(bar)
            if task["state"] in ("succeeded", "failed"):
                self.out.write("\n")
        else:
            self.out.write(bar + "\n")
        self.out.flush()
