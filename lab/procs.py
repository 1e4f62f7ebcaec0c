"""Processes the lab started: identify them by pid (never by name) and end them."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class LabError(RuntimeError):
    """A lab step failed; the message says what and what to do next."""


@dataclass(frozen=True)
class ProcRecord:
    """A process the lab started, pinned by its start time so a reused pid is not ended."""

    pid: int
    starttime: int
    what: str
    host: str | None = None

    def to_json(self) -> dict[str, object]:
        """Return the record as a JSON-ready dict."""
        return {"pid": self.pid, "starttime": self.starttime, "what": self.what, "host": self.host}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ProcRecord:
        """Build a record from its JSON dict."""
        host = data.get("host")
        return cls(
            pid=int(str(data["pid"])),
            starttime=int(str(data["starttime"])),
            what=str(data["what"]),
            host=None if host is None else str(host),
        )

    def alive(self) -> bool:
        """Return True if this exact process (same pid and start time) still exists."""
        return proc_starttime(self.pid) == self.starttime


def proc_starttime(pid: int) -> int | None:
    """Return the start time (clock ticks since boot) of pid, or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces and parentheses: split after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def record(pid: int, what: str, host: str | None = None) -> ProcRecord:
    """Pin a just-started pid; raise LabError if it is already gone."""
    start = proc_starttime(pid)
    if start is None:
        raise LabError(f"{what} (pid {pid}) exited right after it started")
    return ProcRecord(pid=pid, starttime=start, what=what, host=host)


def read_pidfile(path: Path) -> int | None:
    """Return the pid written in a daemon's pid file, or None if there is none."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def ns_inode(path: Path) -> tuple[int, int] | None:
    """Return (device, inode) identifying the namespace bound at path, or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def pids_in_namespaces(ns_ids: set[tuple[int, int]]) -> list[int]:
    """Return pids whose mount or network namespace is one of ns_ids (the lab's own namespaces)."""
    if not ns_ids:
        return []
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        for kind in ("mnt", "net"):
            if ns_inode(entry / "ns" / kind) in ns_ids:
                found.append(int(entry.name))
                break
    return found


def terminate(pids: dict[int, int | None], grace: float = 10.0) -> list[int]:
    """Send SIGTERM to each pid, wait up to grace seconds, SIGKILL the rest; return those killed hard.

    pids maps pid -> expected start time (None: take the pid as it is now).
    """
    pinned: dict[int, int] = {}
    for pid, start in pids.items():
        now = proc_starttime(pid)
        if now is not None and (start is None or now == start):
            pinned[pid] = now
    for pid in pinned:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not any(proc_starttime(p) == s for p, s in pinned.items()):
            return []
        time.sleep(0.1)
    hard = [p for p, s in pinned.items() if proc_starttime(p) == s]
    for pid in hard:
        _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(proc_starttime(p) == pinned[p] for p in hard):
        time.sleep(0.05)
    return hard


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def run(argv: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command in the root namespaces, capturing text output; LabError on failure if check."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)} did not finish within {timeout} s") from exc
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]} is not installed (see docs/lab.md for the packages the lab needs)") from exc
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed (exit {proc.returncode}): {proc.stderr.strip()}")
    return proc


def stop_child(proc: subprocess.Popen[bytes] | None, grace: float = 10) -> None:
    """End a child process this process started: SIGTERM, then SIGKILL after grace seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
