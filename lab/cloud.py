"""A whole labcloud on one machine: the lab's hosts, a controller and one joined agent per host.

Used by the demo (`python -m lab.cloud`) and by the end-to-end tests, so both
exercise the same real components: libvirtd + QEMU per host, HTTPS with mutual
TLS between controller and agents, the cached Debian guest image.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from lab import Lab, LabHost
from lab.image import ensure_guest_image
from lab.libvirtd import LIBVIRT_PKI_DIR
from lab.procs import stop_child

VENV_BIN = Path(sys.executable).parent
DEFAULT_DATA = Path("/var/lib/labcloud-demo")
AGENT_PORT = 8472


class CloudError(RuntimeError):
    """The lab cloud could not be brought up; the message says where it stopped."""


@dataclass
class Api:
    """A tiny API client for tests and the demo (verifies the controller's CA)."""

    url: str
    ca: Path
    token: str = ""
    _local: threading.local = field(default_factory=threading.local, repr=False, compare=False)

    @property
    def session(self) -> requests.Session:
        """Return this thread's session: tests call the API from many threads at once.

        trust_env is off, or REQUESTS_CA_BUNDLE could take the place of the controller's CA.
        """
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False
            session.verify = str(self.ca)
        return session

    def call(self, method: str, path: str, body: Any = None, expect: int | None = None) -> Any:
        """Call the API; with expect, raise unless the status matches."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        resp = self.session.request(method, self.url + "/api/v1" + path, json=body, headers=headers, timeout=60)
        if expect is not None and resp.status_code != expect:
            raise CloudError(f"{method} {path}: HTTP {resp.status_code}: {resp.text[:500]}")
        return resp

    def wait_task(self, task_id: str, timeout: float = 300, poll: float = 0.5) -> dict[str, Any]:
        """Poll a task every poll seconds until it ends (at most timeout); return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task: dict[str, Any] = self.call("GET", f"/tasks/{task_id}", expect=200).json()["task"]
            if task["state"] in ("succeeded", "failed"):
                return task
            time.sleep(poll)
        raise CloudError(f"task {task_id} did not end within {timeout:.0f} s")


class LabCloud:
    """Brings up and tears down the lab, the controller and the agents."""

    def __init__(self, n_hosts: int = 2, data_dir: Path = DEFAULT_DATA, lab: Lab | None = None,
                 admin_password: str | None = None, log_dir: Path | None = None) -> None:
        self.n_hosts = n_hosts
        self.data_dir = data_dir
        self.lab = lab or Lab()
        self.admin_password = admin_password or os.environ.get("LABCLOUD_ADMIN_PASSWORD") or _password()
        self.log_dir = log_dir or data_dir / "logs"
        self.controller: subprocess.Popen[bytes] | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.api: Api | None = None

    @property
    def url(self) -> str:
        """Return the controller's public URL."""
        return f"https://{self.lab.switch_address}:8470"

    def start(self, image: bool = True) -> Api:
        """Bring everything up; return an admin API client."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        image_path = ensure_guest_image() if image else None
        self.lab.up(n_hosts=self.n_hosts)
        self.start_controller()
        api = self.api
        assert api is not None
        for host in self.lab.hosts:
            self.join(host)
            self.start_agent(host)
        self.wait_hosts_up()
        if image_path is not None:
            self.seed_catalog(image_path)
        return api

    def start_controller(self, extra_env: dict[str, str] | None = None) -> None:
        """Start the controller process (with extra environment, e.g. fault injection) and log in as admin."""
        env = dict(os.environ, LABCLOUD_DATA_DIR=str(self.data_dir), LABCLOUD_LISTEN=self.lab.switch_address,
                   LABCLOUD_AGENT_LISTEN=self.lab.switch_address, LABCLOUD_SERVER_NAMES=self.lab.switch_address,
                   LABCLOUD_ADMIN_PASSWORD=self.admin_password, LABCLOUD_LAB_MODE="1", **(extra_env or {}))
        log_path = self.log_dir / "controller.log"
        with log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.controller = subprocess.Popen([str(VENV_BIN / "labcloud-controller"), "serve"], env=env,
                                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.api = Api(self.url, self.data_dir / "pki" / "ca.pem")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.controller.poll() is not None:
                raise CloudError(f"the controller exited ({self.controller.returncode}); see {log_path}")
            if self.api.ca.exists():
                try:
                    resp = self.api.call("POST", "/tokens", {"username": "admin", "password": self.admin_password})
                    if resp.status_code == 201:
                        self.api.token = resp.json()["token"]
                        return
                except requests.ConnectionError:
                    pass
            time.sleep(0.3)
        raise CloudError("the controller did not answer within 30 s")

    def stop_controller(self) -> None:
        """Stop the controller (SIGTERM, then SIGKILL)."""
        stop_child(self.controller)
        self.controller = None

    def kill_controller(self) -> None:
        """Kill the controller at once (SIGKILL by its pid), as a crash would; restart it with start_controller."""
        if self.controller is not None and self.controller.poll() is None:
            self.controller.kill()
            self.controller.wait(10)
        self.controller = None

    def agent_config(self, host: LabHost) -> Path:
        """Return the agent settings file of a lab host."""
        return host.root / "agent" / "agent.json"

    def join(self, host: LabHost) -> None:
        """Enrol a lab host with a fresh one-time token."""
        api = self.api
        assert api is not None
        if self.agent_config(host).exists():
            return
        token = api.call("POST", "/hosts/join-tokens", expect=201).json()["token"]
        host.run([str(VENV_BIN / "labcloud-agent"), "--config", str(self.agent_config(host)), "join", self.url, token,
                  "--name", host.name, "--address", host.address, "--port", str(AGENT_PORT),
                  "--virt-type", "qemu", "--libvirt-pki-dir", LIBVIRT_PKI_DIR,
                  "--shared-pool-path", str(self.lab.shared_dir / "pool"), "--shared-pool-unsafe"], timeout=60)
        # libvirtd now listens with TLS on the certificate the join issued (for migration).
        host.enable_tls()

    def start_agent(self, host: LabHost, extra_env: dict[str, str] | None = None) -> None:
        """Start a host's agent inside its namespaces (with extra environment, e.g. fault injection)."""
        proc = host.spawn([str(VENV_BIN / "labcloud-agent"), "--config", str(self.agent_config(host)), "serve"],
                          log_path=self.log_dir / f"agent-{host.name}.log", env=extra_env)
        self.agents[host.name] = proc

    def set_agent_switch(self, host: LabHost, switch: str) -> None:
        """Restart a host's agent with another switch backend ("linux" or "ovs") if it has not that one."""
        path = self.agent_config(host)
        settings = json.loads(path.read_text())
        if settings.get("switch", "linux") == switch:
            return
        settings["switch"] = switch
        path.write_text(json.dumps(settings, indent=2) + "\n")
        self.stop_agent(host)
        self.start_agent(host)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the agent listens once its TLS setup is done
            with socket.socket() as probe:
                probe.settimeout(1)
                if probe.connect_ex((host.address, AGENT_PORT)) == 0:
                    return
            time.sleep(0.3)
        raise CloudError(f"the agent of {host.name} did not listen again within 30 s")

    def stop_agent(self, host: LabHost) -> None:
        """Stop a host's agent."""
        stop_child(self.agents.pop(host.name, None))

    def kill_agent(self, host: LabHost) -> None:
        """Kill a host's agent at once (SIGKILL by its pid), as a crash would; restart it with start_agent."""
        proc = self.agents.pop(host.name, None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def wait_hosts_up(self, timeout: float = 30) -> None:
        """Wait until every lab host reports in."""
        api = self.api
        assert api is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hosts = api.call("GET", "/hosts", expect=200).json()["hosts"]
            if len(hosts) == self.n_hosts and all(h["state"] == "up" for h in hosts):
                return
            time.sleep(0.5)
        raise CloudError(f"hosts not up within {timeout:.0f} s: {hosts}")

    def seed_catalog(self, image_path: Path) -> None:
        """Import the guest image and create a flavor and the lab network (once)."""
        api = self.api
        assert api is not None
        if not api.call("GET", "/images", expect=200).json()["images"]:
            task = api.call("POST", "/images", {"name": "debian12", "path": str(image_path.resolve()),
                                                "format": "qcow2", "os": "debian12"}, expect=202).json()["task"]
            done = api.wait_task(task["id"], timeout=600)
            if done["state"] != "succeeded":
                raise CloudError(f"image import failed: {done['error']}")
        if not api.call("GET", "/flavors", expect=200).json()["flavors"]:
            api.call("POST", "/flavors", {"name": "small", "vcpus": 1, "memory_mib": 512, "disk_gib": 4}, expect=201)
        if not api.call("GET", "/networks", expect=200).json()["networks"]:
            api.call("POST", "/networks", {"name": "lab", "bridge": "br0", "cidr": self.lab.cidr,
                                           "gateway": self.lab.switch_address, "dns": [self.lab.switch_address],
                                           "range": list(self.vm_range)}, expect=201)

    @property
    def vm_range(self) -> tuple[str, str]:
        """Return the first and last VM address of the lab network (.100 to .199)."""
        net = ipaddress.ip_network(self.lab.cidr)
        return str(net.network_address + 100), str(net.network_address + 199)

    def stop(self) -> None:
        """Stop agents and controller, then take the lab down."""
        for name in list(self.agents):
            stop_child(self.agents.pop(name))
        self.stop_controller()
        self.lab.down()


def _password() -> str:
    import secrets

    return secrets.token_urlsafe(12)


def main(argv: list[str] | None = None) -> int:
    """Run the demo cloud in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m lab.cloud", description="a labcloud demo on this machine")
    parser.add_argument("--hosts", type=int, default=2, help="number of lab hosts (default 2)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, help=f"controller data (default {DEFAULT_DATA})")
    args = parser.parse_args(argv)
    # A demo starts from a clean inventory: its lab hosts are new each time.
    if args.data_dir.exists():
        shutil.rmtree(args.data_dir)
    cloud = LabCloud(n_hosts=args.hosts, data_dir=args.data_dir)
    stop = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        print("labcloud demo: building/reusing the guest image and starting the lab (a few minutes the first time)")
        cloud.start()
        print(f"""
labcloud demo is up: {cloud.n_hosts} lab hosts, image debian12, flavor small, network lab ({cloud.lab.cidr}).

  Web UI and API:  {cloud.url}
  Username:        admin
  Password:        {cloud.admin_password}
  CA certificate:  {cloud.data_dir / 'pki' / 'ca.pem'}   (curl --cacert ...; browsers will warn once)
  API token:       {cloud.api.token if cloud.api else ''}

Create a VM:
  curl --cacert {cloud.data_dir / 'pki' / 'ca.pem'} -H 'Authorization: Bearer TOKEN' \\
       -d '{{"name":"vm1","image":"debian12","flavor":"small","networks":[{{"network":"lab","ip":"10.213.0.120"}}]}}' \\
       -H 'Content-Type: application/json' {cloud.url}/api/v1/vms

Logs: {cloud.log_dir}.  Press Ctrl-C to stop the demo and remove the lab.
""", flush=True)
        while not stop:
            time.sleep(1)
    finally:
        print("labcloud demo: stopping and cleaning up", flush=True)
        cloud.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
