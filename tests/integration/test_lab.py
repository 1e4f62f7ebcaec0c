"""The multi-host lab works: two hosts on one switch, a real guest booting on one of them.

Needs root, libvirt and QEMU on this machine and the guest image (built on first use,
about 80 s).  Run: .venv/bin/pytest -m lab tests/integration/test_lab.py -s
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from lxml import etree
from lxml.builder import E

from lab import Lab, LabHost
from lab.image import ensure_guest_image
from lab.procs import proc_starttime

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root"),
]

# A lab of its own, not the default one (lc, 10.213.0.0/24): the suite's lab cloud (tests/labcloud.py)
# may be up during this module, and taking the default lab down would pull it from under its tests.
PREFIX = "li"
CIDR = "10.217.0.0/24"
STATE_DIR = Path("/run/labcloud-itest")
DATA_DIR = Path("/var/lib/labcloud-itest")
SHARED_DIR = Path("/srv/labcloud-itest-shared")
GUEST_NAME = "lt-guest"
GUEST_MAC = "52:54:00:d5:00:96"
GUEST_IP = "10.217.0.150"
GATEWAY = "10.217.0.1"
BOOT_DEADLINE = 180.0
REPO = Path(__file__).resolve().parents[2]


def _ping(argv_prefix: list[str], address: str) -> bool:
    """Send one ping (1 s timeout) and return True if it was answered."""
    argv = [*argv_prefix, "ping", "-c", "1", "-W", "1", "-q", address]
    return subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0


def _lab() -> Lab:
    """Return the handle of this module's lab (it finds what an earlier up() recorded)."""
    return Lab(STATE_DIR, data_dir=DATA_DIR, shared_dir=SHARED_DIR, prefix=PREFIX, cidr=CIDR)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """A two-host lab, removed at the end even if a test failed."""
    stale = _lab()
    if stale.state_file.exists():
        stale.down()  # left behind by a crashed run
    the_lab = _lab()
    started = time.monotonic()
    try:
        the_lab.up(n_hosts=2)
        print(f"\n[lab] up with 2 hosts in {time.monotonic() - started:.1f} s")
        yield the_lab
    finally:
        _lab().down()


@pytest.fixture(scope="module")
def guest_image() -> Path:
    """The cached Debian 12 guest image (built if missing)."""
    started = time.monotonic()
    path = ensure_guest_image()
    print(f"\n[lab] guest image {path} ready in {time.monotonic() - started:.1f} s")
    return path


def test_hosts_have_distinct_host_uuids(lab: Lab) -> None:
    """Each host's libvirtd reports the host_uuid the lab gave it."""
    uuids = []
    for host in lab.hosts:
        caps = etree.fromstring(host.virsh("capabilities").encode())
        uuids.append(caps.findtext("host/uuid"))
        assert uuids[-1] == host.host_uuid
    assert len(set(uuids)) == 2


def test_hosts_reach_each_other_across_the_switch(lab: Lab) -> None:
    """h1 pings h2's address; both answer from the root namespace (the switch)."""
    h1, h2 = lab.hosts
    assert h1.run(["ping", "-c", "3", "-i", "0.2", "-W", "1", h2.address], timeout=15).returncode == 0
    for host in (h1, h2):
        assert _ping([], host.address)


def _seed_iso(dest: Path) -> None:
    files = {
        "meta-data": yaml.safe_dump({"instance-id": f"{GUEST_NAME}-{int(time.time())}",
                                     "local-hostname": GUEST_NAME}),
        "user-data": "#cloud-config\n" + yaml.safe_dump({"ssh_pwauth": False}),
        "network-config": yaml.safe_dump({"version": 2, "ethernets": {"eth0": {
            "match": {"macaddress": GUEST_MAC},
            "set-name": "eth0",
            "addresses": [f"{GUEST_IP}/24"],
            "routes": [{"to": "default", "via": GATEWAY}],
            "nameservers": {"addresses": [GATEWAY]},
        }}}),
    }
    src = dest.with_suffix(".d")
    src.mkdir()
    for name, text in files.items():
        (src / name).write_text(text)
    subprocess.run(["genisoimage", "-quiet", "-o", str(dest), "-V", "cidata", "-r", "-J", *files],
                   cwd=src, check=True)


def _domain_xml(disk: str, seed: str) -> str:
    def virtio_disk(path: str, fmt: str, dev: str, *extra: etree._Element) -> etree._Element:
        return E.disk(E.driver(name="qemu", type=fmt), E.source(file=path),
                      E.target(dev=dev, bus="virtio"), *extra, type="file", device="disk")

    dom = E.domain(
        E.name(GUEST_NAME),
        E.memory("512", unit="MiB"),
        E.vcpu("1"),
        E.os(E.type("hvm", arch="x86_64", machine="pc"), E.boot(dev="hd")),
        E.features(E.acpi(), E.apic()),
        E.clock(offset="utc"),
        E.devices(
            virtio_disk(disk, "qcow2", "vda"),
            # The cloud kernel has no AHCI driver: the seed is a virtio disk, not a SATA cdrom.
            virtio_disk(seed, "raw", "vdb", E.readonly()),
            E.interface(E.mac(address=GUEST_MAC), E.source(bridge="br0"), E.model(type="virtio"),
                        type="bridge"),
            E.serial(E.log(file=f"/var/log/libvirt/qemu/{GUEST_NAME}-serial.log", append="off"),
                     E.target(port="0"), type="pty"),
            E.console(E.target(type="serial", port="0"), type="pty"),
            E.channel(E.target(type="virtio", name="org.qemu.guest_agent.0"), type="unix"),
        ),
        type="qemu",  # TCG: guests hang under /dev/kvm on these machines
    )
    return etree.tostring(dom, pretty_print=True).decode()


@pytest.fixture
def guest(lab: Lab, guest_image: Path) -> Iterator[LabHost]:
    """A guest defined on h1 from an overlay of the image and a NoCloud seed; removed afterwards."""
    host = lab.hosts[0]
    overlay = host.pool_dir / f"{GUEST_NAME}.qcow2"
    seed = host.pool_dir / f"{GUEST_NAME}-seed.iso"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(guest_image.resolve()),
                    "-F", "qcow2", str(overlay)], check=True)
    _seed_iso(seed)
    xml_path = host.root / f"{GUEST_NAME}.xml"
    # Paths as the host sees them: its pool directory is its /var/lib/libvirt/images.
    xml_path.write_text(_domain_xml(f"/var/lib/libvirt/images/{overlay.name}",
                                    f"/var/lib/libvirt/images/{seed.name}"))
    try:
        host.virsh("define", str(xml_path))
        yield host
    finally:
        host.run(["virsh", "-c", "qemu:///system", "destroy", GUEST_NAME], check=False)
        host.run(["virsh", "-c", "qemu:///system", "undefine", GUEST_NAME], check=False)


def test_guest_boots_with_static_ip_and_agent(guest: LabHost) -> None:
    """The real image boots under TCG on h1, takes its seed's static IP and runs the guest agent."""
    started = time.monotonic()
    guest.virsh("start", GUEST_NAME)
    deadline = started + BOOT_DEADLINE
    pinged_at = None
    while time.monotonic() < deadline:
        if _ping([], GUEST_IP):
            pinged_at = time.monotonic()
            break
        time.sleep(1)
    assert pinged_at is not None, f"{GUEST_IP} did not answer within {BOOT_DEADLINE} s; see " \
        f"{guest.root}/log/qemu/{GUEST_NAME}-serial.log"
    print(f"\n[lab] guest answered ping {pinged_at - started:.1f} s after start")

    agent_answer = None
    command = json.dumps({"execute": "guest-get-host-name"})
    while time.monotonic() < deadline:
        probe = guest.run(["virsh", "-c", "qemu:///system", "qemu-agent-command", GUEST_NAME, command,
                           "--timeout", "5"], check=False, timeout=30)
        if probe.returncode == 0:
            agent_answer = json.loads(probe.stdout)
            break
        time.sleep(2)
    assert agent_answer is not None, "the guest agent never answered guest-get-host-name"
    assert agent_answer["return"]["host-name"] == GUEST_NAME
    print(f"[lab] guest agent answered {time.monotonic() - started:.1f} s after start")
    # Its host reaches it over br0 as well.
    assert guest.run(["ping", "-c", "1", "-W", "2", GUEST_IP], check=False).returncode == 0
    # A getty offers a login prompt on the serial console (what `virsh console` shows).
    serial_log = guest.root / "log" / "qemu" / f"{GUEST_NAME}-serial.log"
    # The getty comes up after the guest agent: give it its own bounded wait, not the boot's leftover.
    prompt_deadline = time.monotonic() + 60
    while time.monotonic() < prompt_deadline and f"{GUEST_NAME} login:" not in serial_log.read_text(errors="replace"):
        time.sleep(1)
    assert f"{GUEST_NAME} login:" in serial_log.read_text(errors="replace")


def test_down_from_another_process_leaves_nothing(lab: Lab) -> None:
    """`python -m lab down` removes namespaces, links, processes, mounts and state."""
    state = lab.state_file.load()
    assert state is not None
    recorded = [(p.pid, p.starttime) for p in state.procs if p.alive()]
    assert recorded, "the lab should have recorded its daemons"
    result = subprocess.run([sys.executable, "-m", "lab", "--state-dir", str(STATE_DIR), "down"], cwd=REPO,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not re.search(rf"^{PREFIX}-", netns, re.MULTILINE), netns
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    assert f"{PREFIX}sw0" not in links and f"{PREFIX}-h" not in links, links
    assert [pid for pid, start in recorded if proc_starttime(pid) == start] == []
    mounts = Path("/proc/self/mountinfo").read_text()
    assert "labcloud-itest" not in mounts
    assert not lab.state_dir.exists() and not lab.data_dir.exists()
