"""The lab's persisted state (<state_dir>/lab.json), so another process can inspect or end it."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from lab.procs import ProcRecord

STATE_VERSION = 1


@dataclass
class HostRecord:
    """What is remembered about one lab host."""

    name: str
    index: int
    host_uuid: str

    def to_json(self) -> dict[str, object]:
        """Return the record as a JSON-ready dict."""
        return {"name": self.name, "index": self.index, "host_uuid": self.host_uuid}


@dataclass
class LabState:
    """Everything down() needs to find what the lab created."""

    prefix: str
    cidr: str
    data_dir: str
    shared_dir: str
    shared_dir_created: bool = False
    hosts: list[HostRecord] = field(default_factory=list)
    procs: list[ProcRecord] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        """Return the state as a JSON-ready dict."""
        return {
            "version": STATE_VERSION,
            "prefix": self.prefix,
            "cidr": self.cidr,
            "data_dir": self.data_dir,
            "shared_dir": self.shared_dir,
            "shared_dir_created": self.shared_dir_created,
            "hosts": [h.to_json() for h in self.hosts],
            "procs": [p.to_json() for p in self.procs],
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> LabState:
        """Build the state from lab.json's content."""
        hosts = data.get("hosts", [])
        procs = data.get("procs", [])
        assert isinstance(hosts, list) and isinstance(procs, list)
        return cls(
            prefix=str(data["prefix"]),
            cidr=str(data["cidr"]),
            data_dir=str(data["data_dir"]),
            shared_dir=str(data["shared_dir"]),
            shared_dir_created=bool(data.get("shared_dir_created", False)),
            hosts=[HostRecord(name=str(h["name"]), index=int(h["index"]), host_uuid=str(h["host_uuid"]))
                   for h in hosts],
            procs=[ProcRecord.from_json(p) for p in procs],
        )

    def host(self, name: str) -> HostRecord | None:
        """Return the record of host name, if the lab has it."""
        return next((h for h in self.hosts if h.name == name), None)


class StateFile:
    """lab.json with an flock around each read-modify-write."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "lab.json"
        self.lock_path = state_dir / "lab.lock"

    def exists(self) -> bool:
        """Return True if a lab state was saved."""
        return self.path.exists()

    def load(self) -> LabState | None:
        """Return the saved state, or None if there is none."""
        try:
            return LabState.from_json(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return None

    @contextmanager
    def update(self, default: LabState) -> Iterator[LabState]:
        """Yield the saved state (or default) under the lock and save it afterwards."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = self.load() or default
            yield state
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n")
            os.replace(tmp, self.path)
