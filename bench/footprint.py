"""Measurement 5: idle RSS and CPU of the controller and one agent, with 10 hosts and 500 VMs.

The eight hosts beyond the two lab hosts are real `labcloud-agent serve` processes,
joined with one-time tokens, sending heartbeats every 3 s over mutual TLS like any
host; their libvirt is the test driver (`test:///FILE`), loaded from a file that
defines their share of the 500 domains, running, with labcloud's metadata.

The 500 VMs are rows written into the inventory (vms, vm_nics, ip_allocations, as a
finished create leaves them) and not created through the API: a create needs the
agent to upload the base image and the seed into a storage volume, which the test
driver does not support (virStorageVolUpload), and 500 real guests do not fit this
machine. Each row matches a domain its host reports, so heartbeats keep them
`running` and the controller does the same work per heartbeat as for real VMs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from lxml import etree

from bench.env import BenchCloud, BenchError
from controller import ipam
from controller.db import Database, now
from controller.pki import key_pem, make_csr, new_key, write_private
from hostagent import domainxml
from hostagent.config import AgentConfig
from hostagent.join import fetch_pinned_ca, parse_token
from lab import procs

VENV_BIN = Path(sys.executable).parent
FAKE_CONSOLE_OFFSET = 100  # the fake agents' VNC relays: FAKE_PORT_BASE + 100 + i
FAKE_PORT_BASE = 8480
BULK_NETWORK = {"name": "bulk", "bridge": "brbulk", "cidr": "172.30.0.0/22", "range": ["172.30.0.10", "172.30.3.250"]}


@dataclass
class FakeHost:
    """An agent on libvirt's test driver, joined to the benchmark's controller."""

    name: str
    host_id: str
    port: int
    root: Path
    vms: list[tuple[str, str, str]]  # (uuid, name, mac)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        """Return the agent's settings file."""
        return self.root / "agent.json"


def _node_xml(host: FakeHost) -> bytes:
    """Return a test-driver file: 16 CPUs, 64 GiB and the host's domains, running, with labcloud metadata."""
    node = etree.Element("node")
    cpu = etree.SubElement(node, "cpu")
    for tag, text in (("mhz", "2000"), ("model", "i686"), ("active", "16"), ("nodes", "1"), ("sockets", "1"),
                      ("cores", "16"), ("threads", "1")):
        etree.SubElement(cpu, tag).text = text
    etree.SubElement(node, "memory").text = str(64 * 1024 * 1024)  # KiB
    for vm_uuid, name, _mac in host.vms:
        dom = etree.SubElement(node, "domain", type="test")
        etree.SubElement(dom, "name").text = name
        etree.SubElement(dom, "uuid").text = vm_uuid
        meta = etree.SubElement(dom, "metadata")
        inst = etree.SubElement(meta, f"{{{domainxml.LABCLOUD_NS}}}instance", nsmap={"lc": domainxml.LABCLOUD_NS})
        for key, value in (("vm-id", vm_uuid), ("owner", "admin"), ("created-by", domainxml.CREATED_BY)):
            etree.SubElement(inst, f"{{{domainxml.LABCLOUD_NS}}}{key}").text = value
        etree.SubElement(dom, "memory", unit="MiB").text = "512"
        etree.SubElement(dom, "vcpu").text = "1"
        os_el = etree.SubElement(dom, "os")
        etree.SubElement(os_el, "type", arch="i686").text = "hvm"
    return etree.tostring(node, pretty_print=True)


class FakeFleet:
    """Eight more hosts and 500 VMs in the inventory; stop() ends their agents."""

    def __init__(self, bench: BenchCloud, hosts: int, vms: int) -> None:
        self.bench = bench
        self.hosts: list[FakeHost] = []
        root = bench.lab.data_dir / "fake-hosts"
        for i in range(hosts):
            share = vms // hosts + (1 if i < vms % hosts else 0)
            number = i + 1 + len(bench.hosts)
            vm_list = [(str(uuid.uuid4()), f"bulk-{number}-{k:03d}",
                        "52:54:00:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:3])) for k in range(share)]
            self.hosts.append(FakeHost(f"fake{number}", str(uuid.uuid4()), FAKE_PORT_BASE + i,
                                       root / f"fake{number}", vm_list))

    def start(self) -> None:
        """Join every fake host, write its VMs into the inventory, start its agent, wait until all are up."""
        api = self.bench.api
        net = api.call("POST", "/networks", BULK_NETWORK, expect=201).json()["network"]
        for host in self.hosts:
            host.root.mkdir(parents=True, exist_ok=True)
            (host.root / "node.xml").write_bytes(_node_xml(host))
            self._join(host)
        self._insert_vms(net)
        for host in self.hosts:
            self._start_agent(host)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = api.call("GET", "/hosts", expect=200).json()["hosts"]
            if sum(1 for h in rows if h["state"] == "up") == len(self.bench.hosts) + len(self.hosts):
                return
            time.sleep(1)
        raise BenchError(f"not every fake host came up within 60 s; see {self.hosts[0].root}/agent.log")

    def _join(self, host: FakeHost) -> None:
        """Enrol like `labcloud-agent join`, with the fake host's own UUID (the test driver has none)."""
        api = self.bench.api
        token, pin = parse_token(api.call("POST", "/hosts/join-tokens", expect=201).json()["token"])
        ca_pem = fetch_pinned_ca(api.url, pin)
        (host.root / "ca.pem").write_bytes(ca_pem)
        key = new_key()
        address = self.bench.lab.switch_address
        resp = requests.post(f"{api.url}/api/v1/hosts/join", timeout=30, verify=str(host.root / "ca.pem"),
                             json={"token": token, "csr": make_csr(key, host.host_id).decode(),
                                   "host_uuid": host.host_id, "name": host.name, "address": address,
                                   "port": host.port})
        if resp.status_code != 201:
            raise BenchError(f"join of {host.name} refused: {resp.text[:300]}")
        cfg = AgentConfig(controller_url=api.url, agent_channel_url=resp.json()["agent_url"], host_id=host.host_id,
                          name=host.name, address=address, port=host.port, pool_path=str(host.root / "pool"),
                          console_port=host.port + FAKE_CONSOLE_OFFSET,  # all share the switch address
                          libvirt_uri=f"test://{host.root / 'node.xml'}", config_dir=str(host.root))
        write_private(cfg.key_path, key_pem(key))
        cfg.cert_path.write_bytes(resp.json()["certificate"].encode())
        cfg.save(host.config_path)

    def _insert_vms(self, net: dict[str, Any]) -> None:
        """Write the VMs as a finished create leaves them: VM row, NIC, address, domain XML."""
        api = self.bench.api
        image = self.bench.image()
        flavor = next(f for f in api.call("GET", "/flavors", expect=200).json()["flavors"] if f["name"] == "small")
        db = Database(self.bench.profile.controller_dir / "inventory.db")
        try:
            owner = db.one("SELECT id FROM users WHERE username = 'admin'")
            network = db.one("SELECT * FROM networks WHERE id = ?", [net["id"]])
            if owner is None or network is None:
                raise BenchError("the inventory has no admin user or no bulk network")
            with db.write() as w:
                for host in self.hosts:
                    for vm_uuid, name, mac in host.vms:
                        xml = domainxml.build_domain(domainxml.DomainSpec(
                            uuid=vm_uuid, name=name, vcpus=1, memory_mib=512,
                            root_disk=f"/var/lib/libvirt/images/labcloud/{vm_uuid}-root.qcow2",
                            seed_disk=f"/var/lib/libvirt/images/labcloud/{vm_uuid}-seed.iso",
                            nics=[domainxml.NicSpec(mac=mac, bridge="brbulk")], virt_type="qemu",
                            vm_id=vm_uuid, owner="admin"))
                        stamp = now()
                        w.execute(
                            "INSERT INTO vms (id, name, owner_id, host_id, image_id, flavor_id, vcpus, memory_mib,"
                            " disk_gib, hostname, storage, state, domain_xml, created_at, updated_at)"
                            " VALUES (?, ?, ?, ?, ?, ?, 1, 512, ?, ?, 'local', 'running', ?, ?, ?)",
                            [vm_uuid, name, owner["id"], host.host_id, image["id"], flavor["id"], flavor["disk_gib"],
                             name, xml, stamp, stamp])
                        address = ipam.allocate(db, network, vm_uuid)
                        w.execute("INSERT INTO vm_nics (vm_id, idx, network_id, mac, address) VALUES (?, 0, ?, ?, ?)",
                                  [vm_uuid, network["id"], mac, address])
        finally:
            db.close()

    def _start_agent(self, host: FakeHost) -> None:
        with (host.root / "agent.log").open("ab") as log:
            host.proc = subprocess.Popen([str(VENV_BIN / "labcloud-agent"), "--config", str(host.config_path),
                                          "serve"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        # Recorded in the lab's state, so that `down()` ends it even if this process is killed.
        self.bench.lab.remember_proc(procs.record(host.proc.pid, f"fake agent {host.name}"))

    def stop(self) -> None:
        """End the fake agents (SIGTERM, then SIGKILL)."""
        for host in self.hosts:
            procs.stop_child(host.proc)


def cpu_ticks(pid: int) -> int:
    """Return the CPU clock ticks (user + system, all threads) a process has used."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, all threads


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for pid {pid}")


def idle_footprint(pids: dict[str, int], seconds: float) -> dict[str, Any]:
    """Sample VmRSS every second and CPU ticks at both ends of an idle window; MB are 10^6 bytes."""
    tck = os.sysconf("SC_CLK_TCK")
    ticks0 = {k: cpu_ticks(p) for k, p in pids.items()}
    started = time.monotonic()
    peak = dict.fromkeys(pids, 0)
    while time.monotonic() - started < seconds:
        for key, pid in pids.items():
            peak[key] = max(peak[key], _rss_bytes(pid))
        time.sleep(1.0)
    elapsed = time.monotonic() - started
    out: dict[str, Any] = {"window_s": round(elapsed, 1)}
    for key, pid in pids.items():
        rss = _rss_bytes(pid)
        out[key] = {"pid": pid, "rss_mb": rss / 1e6, "rss_peak_mb": max(peak[key], rss) / 1e6,
                    "cpu_pct": 100.0 * (cpu_ticks(pid) - ticks0[key]) / tck / elapsed}
    return out
