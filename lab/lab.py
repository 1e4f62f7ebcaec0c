"""The lab: several libvirt hosts on one machine, brought up and torn down as a whole."""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
import uuid
from pathlib import Path

from lab import libvirtd, net, procs
from lab.hosts import LabHost
from lab.libvirtd import LIBVIRT_PKI_DIR, ListenConfig
from lab.procs import LabError, ProcRecord
from lab.state import HostRecord, LabState, StateFile

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path("/run/labcloud-lab")
DEFAULT_DATA_DIR = Path("/var/lib/labcloud-lab")
DEFAULT_SHARED_DIR = Path("/srv/labcloud-shared")
DEFAULT_CIDR = "10.213.0.0/24"
REQUIRED_TOOLS = ("ip", "nsenter", "unshare", "mount", "umount", "findmnt", "virsh", "libvirtd", "virtlogd")


class Lab:
    """Many libvirt hosts on one machine; see SPEC section 6 and docs/lab.md.

    Everything the lab creates is recorded in <state_dir>/lab.json, so down() works from any
    process, also after a crash.  data_dir holds each host's libvirt directories (and so its
    disk images); state_dir holds lab.json and the namespace files.
    """

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR, *, data_dir: Path | None = None,
                 shared_dir: Path | None = None, prefix: str = "lc", cidr: str = DEFAULT_CIDR,
                 listen: bool = False) -> None:
        self.state_dir = Path(state_dir)
        self.state_file = StateFile(self.state_dir)
        saved = self.state_file.load()
        # A saved lab wins over the arguments: down() must find what up() made.
        self.prefix = saved.prefix if saved else prefix
        self.cidr = saved.cidr if saved else cidr
        self.data_dir = Path(saved.data_dir) if saved else Path(data_dir or DEFAULT_DATA_DIR)
        self.shared_dir = Path(saved.shared_dir) if saved else Path(shared_dir or DEFAULT_SHARED_DIR)
        self.listen = listen
        self._network = ipaddress.ip_network(self.cidr)

    def __repr__(self) -> str:
        return f"Lab({str(self.state_dir)!r}, hosts={[h.name for h in self.hosts]})"

    # -- addresses and names ------------------------------------------------------------

    @property
    def switch_address(self) -> str:
        """Return the lab switch's address: the guests' gateway and where the controller listens."""
        return str(self._network.network_address + 1)

    @property
    def switch_name(self) -> str:
        """Return the name of the lab switch bridge in the root namespace."""
        return net.switch_name(self.prefix)

    @property
    def ns_dir(self) -> Path:
        """Return the directory holding the mount namespace files."""
        return self.state_dir / "ns"

    def host_address(self, index: int) -> str:
        """Return the address of host number index (1-based)."""
        return str(self._network.network_address + 10 + index)

    def listen_config(self, host: LabHost) -> ListenConfig | None:
        """Return how host's libvirtd listens for other hosts (None: unix socket only).

        Once the host has certificates (written by `labcloud-agent join` into its
        /etc/libvirt/pki), it listens with TLS only and requires a client certificate.
        """
        if host.has_tls:
            pki = Path(LIBVIRT_PKI_DIR)
            return ListenConfig(address=host.address, tcp=False, tls_cert=pki / "servercert.pem",
                                tls_key=pki / "serverkey.pem", tls_ca=pki / "cacert.pem")
        return ListenConfig(address=host.address) if self.listen else None

    def migration_address(self, host: LabHost) -> str | None:
        """Return the address migrations to host must use (lab hosts share one hostname)."""
        return host.address if self.listen or host.has_tls else None

    # -- state --------------------------------------------------------------------------

    def _blank_state(self) -> LabState:
        return LabState(prefix=self.prefix, cidr=self.cidr, data_dir=str(self.data_dir),
                        shared_dir=str(self.shared_dir))

    @property
    def hosts(self) -> list[LabHost]:
        """Return the lab's hosts, in order."""
        state = self.state_file.load()
        records = sorted(state.hosts, key=lambda h: h.index) if state else []
        return [LabHost(self, h.name, h.index, h.host_uuid) for h in records]

    def host(self, name: str) -> LabHost:
        """Return the host called name; LabError if the lab has none."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise LabError(f"the lab has no host {name!r}; it has {[h.name for h in self.hosts]}")

    def remember_proc(self, record: ProcRecord) -> None:
        """Record a process the lab started so that down() ends it."""
        with self.state_file.update(self._blank_state()) as state:
            state.procs = [p for p in state.procs if p.alive()] + [record]

    # -- up -----------------------------------------------------------------------------

    def up(self, n_hosts: int = 2) -> list[LabHost]:
        """Bring up hosts h1..hN (those already up are left as they are) and return them."""
        if not 1 <= n_hosts <= 89:
            raise LabError(f"n_hosts must be 1..89 (addresses .11-.99 of {self.cidr}), not {n_hosts}")
        self._check_prerequisites()
        with self.state_file.update(self._blank_state()) as state:
            if not self.shared_dir.exists():
                state.shared_dir_created = True
            for index in range(1, n_hosts + 1):
                name = f"h{index}"
                if state.host(name) is None:
                    state.hosts.append(HostRecord(name=name, index=index, host_uuid=str(uuid.uuid4())))
        self.shared_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.shared_dir, 0o755)  # noqa: S103 -- QEMU (libvirt-qemu) reads images here
        self._ensure_ns_dir()
        net.ensure_switch(self.prefix, self.cidr, self.switch_address)
        hosts = [h for h in self.hosts if h.index <= n_hosts]
        probed = False
        for host in hosts:
            log.info("bringing up %s (%s)", host.name, host.address)
            net.ensure_host_network(self.prefix, host.name, host.address, self.cidr, self.switch_address)
            host.prepare_dirs()
            libvirtd.seed_capabilities(host.root / "cache")
            host.ensure_mountns()
            host.start_libvirtd()
            if not probed:
                # Probe QEMU once (a no-op if the seeded probe is still valid) and share it.
                host.virsh("capabilities", timeout=120)
                libvirtd.save_capabilities(host.root / "cache")
                probed = True
        return hosts

    def _check_prerequisites(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, mounts, libvirtd); run it as root")
        missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
        if missing:
            raise LabError(f"missing {', '.join(missing)}: install iproute2, util-linux, libvirt-clients "
                           "and libvirt-daemon-system (see docs/lab.md)")

    def _ensure_ns_dir(self) -> None:
        """Make ns_dir a private mount: a namespace can only be bound onto a file in one."""
        self.ns_dir.mkdir(parents=True, exist_ok=True)
        if not _is_mountpoint(self.ns_dir):
            procs.run(["mount", "--bind", str(self.ns_dir), str(self.ns_dir)])
        procs.run(["mount", "--make-private", str(self.ns_dir)])

    # -- down ---------------------------------------------------------------------------

    def down(self) -> None:
        """Remove everything the lab made; safe when partly up or already down."""
        state = self.state_file.load() or self._blank_state()
        hosts = self.hosts
        for host in hosts:
            if host.mountns_alive() and host.netns_path.exists():
                try:
                    host.remove_domains()
                except LabError as exc:
                    log.warning("%s: could not remove domains: %s", host.name, exc)
        self._end_processes(state, hosts)
        for ns_file in sorted(self.ns_dir.glob("*")) if self.ns_dir.is_dir() else []:
            if _is_mountpoint(ns_file):
                procs.run(["umount", str(ns_file)], check=False)
        if self.ns_dir.is_dir() and _is_mountpoint(self.ns_dir):
            procs.run(["umount", str(self.ns_dir)], check=False)
        for name in {h.name for h in hosts} | {n.removeprefix(f"{self.prefix}-") for n in net.lab_netns(self.prefix)}:
            net.remove_host_network(self.prefix, name)
        net.remove_switch(self.prefix)
        for path in (self.data_dir, self.state_dir):
            busy = _mounts_below(path)
            if busy:
                raise LabError(f"{path} still has mounts ({', '.join(busy)}); unmount them and run down again")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if state.shared_dir_created:
            shutil.rmtree(self.shared_dir, ignore_errors=True)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def _end_processes(self, state: LabState, hosts: list[LabHost]) -> None:
        """End recorded pids, then any process still living in one of the lab's namespaces."""
        recorded: dict[int, int | None] = {p.pid: p.starttime for p in state.procs if p.alive()}
        procs.terminate(recorded)
        ns_ids = {procs.ns_inode(h.mountns_path) for h in hosts if h.mountns_alive()}
        ns_ids |= {procs.ns_inode(net.NETNS_DIR / n) for n in net.lab_netns(self.prefix)}
        stragglers = procs.pids_in_namespaces({i for i in ns_ids if i is not None})
        if stragglers:
            log.info("ending %d more processes inside the lab's namespaces", len(stragglers))
            procs.terminate(dict.fromkeys(stragglers))

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """Return what is up, for `python -m lab status`."""
        hosts = []
        for host in self.hosts:
            hosts.append({
                "name": host.name, "address": host.address, "netns": host.netns,
                "host_uuid": host.host_uuid, "root": str(host.root),
                "netns_exists": host.netns_path.exists(), "mountns_alive": host.mountns_alive(),
                "virtlogd_pid": host.daemon_pid("virtlogd") if host.mountns_alive() else None,
                "libvirtd_pid": host.daemon_pid("libvirtd") if host.mountns_alive() else None,
            })
        state = self.state_file.load()
        return {
            "state_dir": str(self.state_dir), "data_dir": str(self.data_dir),
            "shared_dir": str(self.shared_dir), "cidr": self.cidr,
            "switch": self.switch_name, "switch_address": self.switch_address,
            "switch_exists": net.link_exists(self.switch_name),
            "hosts": hosts,
            "live_pids": [p.to_json() for p in (state.procs if state else []) if p.alive()],
        }


def _mountinfo_targets() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4].replace("\\040", " ") for line in f]


def _is_mountpoint(path: Path) -> bool:
    return str(path.resolve()) in _mountinfo_targets()


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve())
    return [t for t in _mountinfo_targets() if t == prefix or t.startswith(prefix + "/")]
