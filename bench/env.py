"""The benchmark's own lab cloud, and the machine it runs on.

The benchmark never touches the default lab (prefix lc, 10.213.0.0/24) that tests and
the demo use: it brings up a lab of its own, with its own names, network and directories.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from hostagent.hypervisor import start_event_loop
from lab import Lab, LabHost
from lab.cloud import Api, LabCloud

BENCH_PASSWORD = "bench-guest-pw"  # noqa: S105 - the lab guests' console password, not a secret
TINY = {"name": "tiny", "vcpus": 1, "memory_mib": 128, "disk_gib": 4}


@dataclass(frozen=True)
class LabProfile:
    """Where one benchmark lab lives: its names, network and directories."""

    prefix: str
    cidr: str
    state_dir: Path
    data_dir: Path
    shared_dir: Path
    controller_dir: Path

    def lab(self) -> Lab:
        """Return the Lab object of this profile (a saved lab.json wins, as always)."""
        return Lab(state_dir=self.state_dir, data_dir=self.data_dir, shared_dir=self.shared_dir,
                   prefix=self.prefix, cidr=self.cidr)


PROFILES = {
    # `python -m bench`: distinct from the default lab (lc, 10.213.0.0/24) used by tests and the demo.
    "bench": LabProfile("lb", "10.214.0.0/24", Path("/run/labcloud-bench"), Path("/var/lib/labcloud-bench"),
                        Path("/srv/labcloud-bench-shared"), Path("/var/lib/labcloud-bench-controller")),
    # The smoke test in the suite: distinct from both, so CI and a benchmark run never collide.
    "smoke": LabProfile("ls", "10.215.0.0/24", Path("/run/labcloud-smoke"), Path("/var/lib/labcloud-smoke"),
                        Path("/srv/labcloud-smoke-shared"), Path("/var/lib/labcloud-smoke-controller")),
    # `python -m bench.soak`: the long create/destroy soak, distinct from all of the above.
    "soak": LabProfile("lk", "10.216.0.0/24", Path("/run/labcloud-soak"), Path("/var/lib/labcloud-soak"),
                       Path("/srv/labcloud-soak-shared"), Path("/var/lib/labcloud-soak-controller")),
}


class BenchError(RuntimeError):
    """A benchmark step could not run; the message says which and why."""


class BenchCloud:
    """The lab cloud a run measures: two lab hosts, controller, agents, catalog."""

    def __init__(self, profile: LabProfile, log_dir: Path) -> None:
        self.profile = profile
        self.lab = profile.lab()
        self.cloud = LabCloud(n_hosts=2, data_dir=profile.controller_dir, lab=self.lab, log_dir=log_dir)
        self.conns: dict[str, libvirt.virConnect] = {}

    @property
    def api(self) -> Api:
        """Return the admin API client."""
        if self.cloud.api is None:
            raise BenchError("the lab cloud is not started")
        return self.cloud.api

    @property
    def hosts(self) -> list[LabHost]:
        """Return the lab hosts, h1 first."""
        return self.lab.hosts

    def host(self, name: str) -> LabHost:
        """Return one lab host by name."""
        return self.lab.host(name)

    def start(self) -> None:
        """Remove what a killed run of this profile left, then bring everything up."""
        self.lab.down()
        shutil.rmtree(self.profile.controller_dir, ignore_errors=True)
        self.cloud.start()
        api = self.api
        flavors = {f["name"] for f in api.call("GET", "/flavors", expect=200).json()["flavors"]}
        if TINY["name"] not in flavors:
            api.call("POST", "/flavors", TINY, expect=201)
        # Lab hosts report 2 CPUs each; the burst puts 10 one-vCPU guests on each.
        for host in self.hosts:
            api.call("PATCH", f"/hosts/{host.name}", {"cpu_ratio": 16.0}, expect=200)

    def conn(self, host: LabHost) -> libvirt.virConnect:
        """Return a libvirt connection to a lab host's libvirtd through its unix socket."""
        if host.name not in self.conns:
            start_event_loop()  # before the connection opens, or its events are never delivered
            sock = host.root / "run" / "libvirt-sock"
            self.conns[host.name] = libvirt.open(f"qemu+unix:///system?socket={sock}")
        return self.conns[host.name]

    def image(self) -> dict[str, Any]:
        """Return the catalog's guest image row."""
        images = self.api.call("GET", "/images", expect=200).json()["images"]
        if not images:
            raise BenchError("the lab cloud has no image")
        image: dict[str, Any] = images[0]
        return image

    def image_file(self) -> Path:
        """Return the controller's stored copy of the guest image (the bytes labcloud hands to hosts)."""
        path = self.profile.controller_dir / "images" / f"{self.image()['sha256']}.qcow2"
        if not path.is_file():
            raise BenchError(f"{path} is missing: the image import did not finish")
        return path

    def vm_address(self, offset: int) -> str:
        """Return lab address .offset (VM addresses are .100 to .199)."""
        if not 100 <= offset <= 199:
            raise BenchError(f"VM address offset {offset} is outside the lab's range .100-.199")
        base = self.lab.cidr.split("/")[0].rsplit(".", 1)[0]
        return f"{base}.{offset}"

    def stop(self) -> None:
        """Close libvirt connections and take the cloud and the lab down."""
        for conn in self.conns.values():
            try:
                conn.close()
            except libvirt.libvirtError:
                pass
        self.conns.clear()
        self.cloud.stop()


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "unknown"


def machine() -> dict[str, Any]:
    """Return what the numbers depend on: CPUs, RAM, kernel, libvirt, QEMU, load."""
    meminfo = Path("/proc/meminfo").read_text()
    found = re.search(r"MemTotal:\s+(\d+) kB", meminfo)
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"model name\s*:\s*(.+)", cpuinfo)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model.group(1).strip() if model else platform.processor() or "unknown",
        "ram_gib": round(int(found.group(1)) / 1024**2, 1) if found else None,
        "kernel": platform.release(),
        "os": _first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "libvirt": _first_line(["libvirtd", "--version"]),
        "qemu": _first_line(["qemu-system-x86_64", "--version"]),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }
