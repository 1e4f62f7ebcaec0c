"""The baseline: the same work an operator does by hand today, inside the same lab host.

Create is `qemu-img create` (a qcow2 overlay on the same base image), `genisoimage`
(the NoCloud seed, as cloud-localds does it), `virsh define` and `virsh start`, run as
one shell script inside the lab host. Migration is `virsh migrate` with the flags
labcloud's agent passes to libvirt, after preparing the destination the way labcloud
does (the empty overlay on the same backing image, and a copy of the seed).

What the operator would have written beforehand (the seed files and the domain XML,
from templates) is prepared before the clock starts; it is the same content labcloud
generates: seed files from hostagent.seed and domain XML from hostagent.domainxml,
without labcloud's <metadata>.
"""

from __future__ import annotations

import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import libvirt
from lxml import etree

from bench.env import BENCH_PASSWORD, BenchCloud, BenchError
from hostagent import domainxml, seed
from lab import LabHost
from lab.libvirtd import LIBVIRT_PKI_DIR

INSIDE = Path("/var/lib/libvirt/images/baseline")  # the hosts' /var/lib/libvirt is private to each
OVERLAY_SIZE = "4G"  # what labcloud makes for the flavors used here: max(flavor disk, image size)

CREATE_SCRIPT = """set -eu
cd "$1"
qemu-img create -q -f qcow2 -b "$2" -F qcow2 root.qcow2 "$3"
genisoimage -quiet -output seed.iso -volid cidata -joliet -rock user-data meta-data network-config
virsh -q -c qemu:///system define domain.xml >/dev/null
virsh -q -c qemu:///system start "$4" >/dev/null
"""

INCOMING_SCRIPT = """set -eu
mkdir -p "$1"
qemu-img create -q -f qcow2 -b "$2" -F qcow2 "$1/root.qcow2" "$3"
"""

MIGRATE_FLAGS = ["--live", "--p2p", "--persistent", "--undefinesource", "--auto-converge", "--tls",
                 "--copy-storage-inc", "--migrate-disks", "vda"]


@dataclass
class HandVm:
    """A VM made by hand: its name, host, address and working directory."""

    name: str
    host: LabHost
    ip: str
    memory_mib: int

    @property
    def inside(self) -> Path:
        """Return the VM's directory as the lab host sees it."""
        return INSIDE / self.name

    def outside(self, host: LabHost | None = None) -> Path:
        """Return the VM's directory on a host, as this process sees it."""
        return (host or self.host).pool_dir / "baseline" / self.name


class Baseline:
    """Creates, migrates and removes VMs by hand in the benchmark's lab."""

    def __init__(self, bench: BenchCloud) -> None:
        self.bench = bench

    def install_base(self) -> None:
        """Copy labcloud's stored image (same bytes, same checksum) to each host's baseline directory."""
        source = self.bench.image_file()
        for host in self.bench.hosts:
            target = host.pool_dir / "baseline"
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o755)
            shutil.copyfile(source, target / "base.qcow2")
            (target / "base.qcow2").chmod(0o644)

    def prepare(self, name: str, host: LabHost, ip: str, vcpus: int = 1, memory_mib: int = 512) -> HandVm:
        """Write what an operator has ready before typing commands: seed files and domain XML."""
        vm = HandVm(name, host, ip, memory_mib)
        where = vm.outside()
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        where.chmod(0o755)
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in uuid.uuid4().bytes[:3])
        vm_uuid = str(uuid.uuid4())
        gateway = self.bench.lab.switch_address
        prefix = self.bench.lab.cidr.split("/")[1]
        files = seed.build_seed_files(
            instance_id=vm_uuid, hostname=name, password=BENCH_PASSWORD,
            nics=[seed.SeedNic(mac=mac, addresses=[f"{ip}/{prefix}"], gateway=gateway, dns=[gateway], name="eth0")])
        for file_name, data in files.items():
            (where / file_name).write_bytes(data)
        xml = domainxml.build_domain(domainxml.DomainSpec(
            uuid=vm_uuid, name=name, vcpus=vcpus, memory_mib=memory_mib, root_disk=str(vm.inside / "root.qcow2"),
            seed_disk=str(vm.inside / "seed.iso"), nics=[domainxml.NicSpec(mac=mac, bridge="br0")],
            virt_type="qemu"))
        root = domainxml.parse_xml(xml)
        for metadata in root.findall("metadata"):
            root.remove(metadata)  # a hand-made domain carries no labcloud metadata
        (where / "domain.xml").write_bytes(etree.tostring(root))
        return vm

    def create(self, vm: HandVm) -> tuple[float, bool]:
        """Run overlay + seed + define + start inside the host; return (start time, success)."""
        argv = ["sh", "-c", CREATE_SCRIPT, "baseline-create", str(vm.inside), str(INSIDE / "base.qcow2"),
                OVERLAY_SIZE, vm.name]
        started = time.monotonic()
        done = vm.host.run(argv, check=False, timeout=300)
        if done.returncode != 0:
            print(f"bench: baseline create of {vm.name} failed: {done.stderr.strip()}", flush=True)
        return started, done.returncode == 0

    def migrate(self, vm: HandVm, dest: LabHost) -> float:
        """Move a running VM to dest by hand; return the seconds it took (BenchError on failure)."""
        started = time.monotonic()
        dest.run(["sh", "-c", INCOMING_SCRIPT, "baseline-incoming", str(vm.inside), str(INSIDE / "base.qcow2"),
                  OVERLAY_SIZE], timeout=120)
        shutil.copy2(vm.outside() / "seed.iso", vm.outside(dest) / "seed.iso")  # scp, by hand
        uri = f"qemu+tls://{dest.address}/system?pkipath={LIBVIRT_PKI_DIR}"
        done = vm.host.run(["virsh", "-q", "-c", "qemu:///system", "migrate", *MIGRATE_FLAGS, vm.name, uri,
                            "--migrateuri", f"tcp://{dest.address}"], check=False, timeout=600)
        if done.returncode != 0:
            raise BenchError(f"virsh migrate of {vm.name} to {dest.name} failed: {done.stderr.strip()}")
        shutil.rmtree(vm.outside())  # the source's copies, as labcloud's cleanup does
        elapsed = time.monotonic() - started
        vm.host = dest
        return elapsed

    def remove(self, vm: HandVm) -> None:
        """Destroy and undefine the domain and delete its files (not timed)."""
        conn = self.bench.conn(vm.host)
        try:
            dom = conn.lookupByName(vm.name)
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
        shutil.rmtree(vm.outside(), ignore_errors=True)
