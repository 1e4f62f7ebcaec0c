"""The lab cloud for end-to-end tests: two lab hosts, a controller, two joined agents.

Its fixtures are registered in tests/conftest.py, so tests/lab and the browser's lab flow
(tests/browser/test_lab_flow.py) share one session-scoped lab per pytest run.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.cloud import Api, LabCloud


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabCloud]:
    """Bring the lab cloud up once per session; always take it down."""
    data = tmp_path_factory.mktemp("controller")
    lc = LabCloud(n_hosts=2, data_dir=data, log_dir=Path("artifacts/logs"))
    try:
        lc.start()
        yield lc
    finally:
        lc.stop()


@pytest.fixture
def api(cloud: LabCloud) -> Api:
    """An admin API client."""
    assert cloud.api is not None
    return cloud.api


@pytest.fixture
def cleanup(api: Api) -> Iterator[list[str]]:
    """Names of VMs a test made; they are destroyed afterwards, also when the test failed."""
    names: list[str] = []
    yield names
    for name in names:
        if api.call("GET", f"/vms/{name}").status_code == 200:
            try:
                destroy_vm(api, name)
            except Exception as exc:  # keep cleaning the others
                print(f"cleanup: could not destroy {name}: {exc}")


def ping_until(address: str, timeout: float = 240) -> bool:
    """Ping from the lab switch (root namespace) until an answer, at most timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["ping", "-c", "1", "-W", "1", address], capture_output=True).returncode == 0:
            return True
        time.sleep(1)
    return False


def ping_lost(address: str, timeout: float = 120) -> bool:
    """Ping until an answer is missing (the guest went down), at most timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["ping", "-c", "1", "-W", "1", address], capture_output=True).returncode != 0:
            return True
        time.sleep(0.5)
    return False


def wait_guest_agent(api: Api, name: str, timeout: float = 180) -> dict | None:
    """Poll the VM's guest-agent info until it answers; None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = api.call("GET", f"/vms/{name}/guest")
        if resp.status_code == 200:
            return resp.json()["guest"]
        time.sleep(2)
    return None


def create_vm(api: Api, name: str, ip: str | None = None, host: str | None = None, wait: bool = True,
              storage: str = "local") -> dict:
    """Create a VM through the API; with wait, return the finished task."""
    body: dict = {"name": name, "image": "debian12", "flavor": "small", "networks": [{"network": "lab"}],
                  "password": "labcloud-test-pw", "storage": storage}
    if ip:
        body["networks"][0]["ip"] = ip
    if host:
        body["host"] = host
    task = api.call("POST", "/vms", body, expect=202).json()["task"]
    return api.wait_task(task["id"], timeout=600) if wait else task


def destroy_vm(api: Api, name: str) -> dict:
    """Destroy a VM through the API and wait for the task."""
    task = api.call("DELETE", f"/vms/{name}", expect=202).json()["task"]
    return api.wait_task(task["id"], timeout=300)
