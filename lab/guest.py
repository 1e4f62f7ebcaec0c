"""Run commands inside a lab guest through qemu-guest-agent (``guest-exec``), via its host's libvirt."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lab.procs import LabError

if TYPE_CHECKING:
    from lab.hosts import LabHost


@dataclass
class GuestResult:
    """What a command run in a guest returned."""

    exitcode: int
    stdout: str
    stderr: str


def agent_command(host: LabHost, domain: str, command: dict[str, object], timeout: float = 30) -> dict[str, object]:
    """Send one QMP-style command to the guest agent of a domain on host; return its 'return' value."""
    out = host.run(["virsh", "-c", "qemu:///system", "qemu-agent-command", domain, "--timeout", str(int(timeout)),
                    "--cmd", json.dumps(command)], timeout=timeout + 15).stdout
    answer = json.loads(out)
    if not isinstance(answer, dict) or "return" not in answer:
        raise LabError(f"{domain}: unexpected guest agent answer {out[:200]!r}")
    value = answer["return"]
    return value if isinstance(value, dict) else {"value": value}


def guest_exec(host: LabHost, domain: str, argv: list[str], timeout: float = 60) -> GuestResult:
    """Run argv in the guest (no shell), wait for it, and return exit code and output."""
    started = agent_command(host, domain, {"execute": "guest-exec", "arguments": {
        "path": argv[0], "arg": argv[1:], "capture-output": True}})
    pid = started["pid"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = agent_command(host, domain, {"execute": "guest-exec-status", "arguments": {"pid": pid}})
        if status.get("exited"):
            return GuestResult(
                exitcode=int(str(status.get("exitcode", -1))),
                stdout=base64.b64decode(str(status.get("out-data", ""))).decode(errors="replace"),
                stderr=base64.b64decode(str(status.get("err-data", ""))).decode(errors="replace"),
            )
        time.sleep(0.5)
    raise LabError(f"{domain}: {' '.join(argv)} did not finish within {timeout:.0f} s")
