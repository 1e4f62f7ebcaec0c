"""Every `labcloud` CLI verb against the lab cloud, with one guest, in the order a user would go.

The tests of this module run in order and share the guest `e2e-cli` (created by the create test,
destroyed by the last one, or by the module's cleanup when something failed on the way). The CLI runs
as its own process (`python -m labcli`) with its own config file, exactly as a user runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.pki import fingerprint
from lab.cloud import Api, LabCloud
from tests.lab.conftest import destroy_vm, wait_guest_agent

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
VM = "e2e-cli"
NEW_MEMORY_KIB = 458752  # 448 MiB: below the flavor's 512 MiB, so it fits wherever the VM fits

SET_MEMORY = f"""\
import sys
from lxml import etree
path = sys.argv[1]
doc = etree.parse(path, etree.XMLParser(resolve_entities=False, no_network=True))
for tag in ("memory", "currentMemory"):
    node = doc.getroot().find(tag)
    node.text, node.attrib["unit"] = "{NEW_MEMORY_KIB}", "KiB"
doc.write(path)
"""
BREAK_XML = """\
import pathlib, sys
path = pathlib.Path(sys.argv[1])
path.write_text(path.read_text().replace("</domain>", "<oops></domain>"))
"""


class Labcloud:
    """Runs the `labcloud` CLI in a subprocess with a private config; stdin is not a terminal."""

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        self.env = {**os.environ, "PYTHONPATH": str(ROOT),
                    "LABCLOUD_CONFIG": str(config_dir / "labcloud" / "config.json")}

    def __call__(self, *args: str, input_: str | None = None, editor: str | None = None,
                 timeout: float = 900) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if editor is not None:
            script = self.config_dir / "editor.py"
            script.write_text(editor)
            env["EDITOR"] = f"{sys.executable} {script}"
            env.pop("VISUAL", None)
        return subprocess.run([sys.executable, "-m", "labcli", *args], env=env, cwd=ROOT, text=True,
                              capture_output=True, timeout=timeout, check=False,
                              input=input_, stdin=None if input_ is not None else subprocess.DEVNULL)

    def ok(self, *args: str, **kwargs: str) -> str:
        """Run a command that must succeed; return its stdout."""
        proc = self(*args, **kwargs)
        assert proc.returncode == 0, f"labcloud {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
        return proc.stdout

    def json(self, *args: str) -> dict:
        """Run a read command with --json and return its document."""
        return json.loads(self.ok(*args, "--json"))


@pytest.fixture(scope="module")
def lc(cloud: LabCloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Labcloud]:
    """The CLI logged in as admin by pinning the CA's fingerprint; the guest is removed afterwards."""
    runner = Labcloud(tmp_path_factory.mktemp("labcloud-cli"))
    pin = fingerprint((cloud.data_dir / "pki" / "ca.pem").read_bytes())
    runner.env["LABCLOUD_PASSWORD"] = cloud.admin_password
    out = runner.ok("login", cloud.url, "--user", "admin", "--ca-sha256", pin)
    del runner.env["LABCLOUD_PASSWORD"]
    assert "logged in" in out
    yield runner
    assert cloud.api is not None
    if cloud.api.call("GET", f"/vms/{VM}").status_code == 200:
        destroy_vm(cloud.api, VM)


def test_login_whoami_and_catalog(lc: Labcloud, cloud: LabCloud) -> None:
    config = Path(lc.env["LABCLOUD_CONFIG"])
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert lc.ok("whoami").strip() == f"admin (admin) at {cloud.url}"
    hosts = lc.ok("hosts")
    assert hosts.splitlines()[0].split()[:3] == ["NAME", "STATE", "ADDRESS"]
    assert [h["name"] for h in lc.json("hosts")["hosts"]] == ["h1", "h2"]
    assert "debian12" in lc.ok("images") and "small" in lc.ok("flavors") and "lab" in lc.ok("networks")
    assert [n["name"] for n in lc.json("networks")["networks"]] == ["lab"]


def test_create_list_show(lc: Labcloud, cloud: LabCloud, api: Api) -> None:
    proc = lc("create", VM, "--image", "debian12", "--flavor", "small", "--network", "lab", "--host", "h1",
              "--password-stdin", "--wait", input_="labcloud-test-pw\n")
    assert proc.returncode == 0, proc.stderr
    assert "vm.create [" in proc.stderr and "100%" in proc.stderr  # the text progress bar
    assert f"vm.create of {VM} succeeded" in proc.stdout
    row = next(line.split() for line in lc.ok("list").splitlines() if line.startswith(VM))
    assert row[1:3] == ["running", "h1"]
    assert lc.ok("show", VM).splitlines()[0].split() == ["name:", VM]
    vm = lc.json("show", VM)["vm"]
    assert vm["host"]["name"] == "h1" and vm["memory_mib"] == 512
    assert wait_guest_agent(api, VM) is not None, "the guest agent never answered"  # ACPI works from now on


def test_dumpxml_and_edit(lc: Labcloud) -> None:
    before = lc.ok("dumpxml", VM)
    assert f"<name>{VM}</name>" in before
    out = lc.ok("edit", VM, editor=SET_MEMORY)
    assert "updated" in out and "next boot" in out  # the VM runs: the new size applies at its next boot
    after = lc.ok("dumpxml", VM)
    assert f"<memory unit='KiB'>{NEW_MEMORY_KIB}</memory>" in after
    assert f"<currentMemory unit='KiB'>{NEW_MEMORY_KIB}</currentMemory>" in after

    broken = lc("edit", VM, editor=BREAK_XML)  # stdin is not a terminal: no "edit again?"
    assert broken.returncode == 1, broken.stdout
    assert "refused" in broken.stderr and "line" in broken.stderr and "(request req-" in broken.stderr
    assert lc.ok("dumpxml", VM) == after


def test_shutdown_start_reboot(lc: Labcloud) -> None:
    lc.ok("shutdown", VM, "--wait")
    assert lc.json("show", VM)["vm"]["state"] == "shutoff"
    lc.ok("start", VM, "--wait")
    assert lc.json("show", VM)["vm"]["state"] == "running"
    out = lc.ok("reboot", VM, "--wait")
    assert f"vm.reboot of {VM} succeeded" in out
    # The size edited above is in effect since the start, and in the inventory.
    assert lc.json("show", VM)["vm"]["memory_mib"] == NEW_MEMORY_KIB // 1024


def test_migrate_and_console(lc: Labcloud) -> None:
    proc = lc("migrate", VM, "--to", "h2", "--wait")
    assert proc.returncode == 0, proc.stderr
    assert "vm.migrate [" in proc.stderr
    assert lc.json("show", VM)["vm"]["host"]["name"] == "h2"
    out = lc.ok("console", VM)
    assert out.splitlines()[0].startswith("https://") and "/console" in out.splitlines()[0]
    assert "valid once" in out


def test_poweroff_tasks_destroy_logout(lc: Labcloud) -> None:
    lc.ok("poweroff", VM, "--wait")
    assert lc.json("show", VM)["vm"]["state"] == "shutoff"
    kinds = [t["kind"] for t in lc.json("tasks", "--all")["tasks"] if t["vm_name"] == VM]
    assert {"vm.create", "vm.shutdown", "vm.start", "vm.reboot", "vm.migrate", "vm.poweroff"} <= set(kinds)
    assert "KIND" in lc.ok("tasks", "--all") and lc("tasks").returncode == 0
    assert lc("destroy", VM).returncode == 2  # no terminal to confirm on, no --yes
    lc.ok("destroy", VM, "--yes", "--wait")
    assert lc("show", VM).returncode == 4
    assert VM not in lc.ok("list")
    lc.ok("logout")
    assert lc("list").returncode == 3
