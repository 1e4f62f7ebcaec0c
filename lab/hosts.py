"""One lab host: a network namespace plus a persistent private mount namespace running libvirtd."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lab import libvirtd, procs
from lab.net import NETNS_DIR, netns_name
from lab.procs import LabError

if TYPE_CHECKING:
    from lab.lab import Lab

# Per-host directory (under host.root) -> where the host sees it.
BIND_MOUNTS: tuple[tuple[str, str], ...] = (
    ("run", "/run/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("etc", "/etc/libvirt"),
    ("log", "/var/log/libvirt"),
    ("cache", "/var/cache/libvirt"),
)
DAEMON_START_TIMEOUT = 30.0


def _copy_dir_skeleton(src: Path, dest: Path) -> None:
    """Create dest with the directories (not files) of src, keeping their modes and owners."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in [src, *sorted(p for p in src.rglob("*") if p.is_dir() and not p.is_symlink())]:
        target = dest / path.relative_to(src)
        target.mkdir(exist_ok=True)
        st = path.stat()
        os.chown(target, st.st_uid, st.st_gid)
        os.chmod(target, stat.S_IMODE(st.st_mode))


class LabHost:
    """A lab host; every command given to it runs inside its network and mount namespaces."""

    def __init__(self, lab: Lab, name: str, index: int, host_uuid: str) -> None:
        self.lab = lab
        self.name = name
        self.index = index
        self.host_uuid = host_uuid

    def __repr__(self) -> str:
        return f"LabHost({self.name!r}, {self.address!r})"

    @property
    def address(self) -> str:
        """Return the host's address on the lab network (10.213.0.(10+N))."""
        return self.lab.host_address(self.index)

    @property
    def netns(self) -> str:
        """Return the name of the host's network namespace."""
        return netns_name(self.lab.prefix, self.name)

    @property
    def netns_path(self) -> Path:
        """Return the file that pins the host's network namespace."""
        return NETNS_DIR / self.netns

    @property
    def mountns_path(self) -> Path:
        """Return the file that pins the host's mount namespace."""
        return self.lab.ns_dir / self.name

    @property
    def root(self) -> Path:
        """Return the host's state directory (its /run/libvirt, /var/lib/libvirt, ... live below)."""
        return self.lab.data_dir / self.name

    @property
    def pool_dir(self) -> Path:
        """Return where the host's /var/lib/libvirt/images is, as seen from the root namespace."""
        return self.root / "lib" / "images"

    # -- running things inside the host -------------------------------------------------

    def wrap(self, argv: list[str]) -> list[str]:
        """Return argv prefixed so that it runs inside this host's namespaces."""
        return ["nsenter", f"--mount={self.mountns_path}", f"--net={self.netns_path}", "--", *argv]

    def run(self, argv: list[str], check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run argv inside the host and return its captured text output; LabError on failure if check."""
        try:
            proc = subprocess.run(self.wrap(argv), capture_output=True, text=True, timeout=timeout,
                                  input=input, check=False)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"{self.name}: {' '.join(argv)} did not finish within {timeout} s") from exc
        if check and proc.returncode != 0:
            raise LabError(f"{self.name}: {' '.join(argv)} failed (exit {proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()}")
        return proc

    def spawn(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a long-running process inside the host, output to log_path; down() will end it.

        env holds variables added to this process's environment.
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, **(env or {})}
        with open(log_path, "ab") as log:
            # nsenter execs argv in place (no fork without --pid), so the pid is argv's own.
            proc = subprocess.Popen(self.wrap(argv), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
        try:
            self.lab.remember_proc(procs.record(proc.pid, " ".join(argv)[:200], self.name))
        except LabError:
            proc.wait(timeout=5)
            raise LabError(f"{self.name}: {' '.join(argv)} exited at once (exit {proc.returncode}); "
                           f"see {log_path}") from None
        return proc

    def virsh(self, *args: str, timeout: float = 60) -> str:
        """Run virsh against this host's libvirtd and return its output."""
        return self.run(["virsh", "-q", "-c", "qemu:///system", *args], timeout=timeout).stdout

    # -- setting the host up ------------------------------------------------------------

    def prepare_dirs(self) -> None:
        """Create the per-host directories and the host's own /etc/libvirt."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)  # noqa: S103 -- QEMU (libvirt-qemu) traverses it to its images
        for sub, target in BIND_MOUNTS:
            if sub != "etc":
                # libvirt expects the package's directories (e.g. /var/log/libvirt/qemu) to exist.
                _copy_dir_skeleton(Path(target), self.root / sub)
        self.pool_dir.mkdir(exist_ok=True)
        libvirtd.prepare_etc(self.root / "etc", self.host_uuid, self.lab.listen_config(self),
                             self.lab.migration_address(self))

    def mountns_alive(self) -> bool:
        """Return True if the host's mount namespace file pins a live namespace."""
        ns = procs.ns_inode(self.mountns_path)
        nsfs = procs.ns_inode(Path("/proc/self/ns/mnt"))
        return ns is not None and nsfs is not None and ns[0] == nsfs[0]

    def ensure_mountns(self) -> None:
        """Create the persistent mount namespace (if needed) and its bind mounts."""
        if not self.mountns_alive():
            self.mountns_path.touch()
            # nsenter --net (and not `ip netns exec`) so that unshare's bind of the new
            # namespace onto its file happens in the root mount namespace, where it persists.
            procs.run(["nsenter", f"--net={self.netns_path}", "unshare",
                       f"--mount={self.mountns_path}", "--propagation", "private", "true"])
            # A sysfs mounted from inside the netns shows the host's own /sys/class/net.
            self.run(["umount", "--lazy", "/sys"])
            self.run(["mount", "-t", "sysfs", "sysfs", "/sys"])
            self._hide_kvm()
        for sub, target in BIND_MOUNTS:
            Path(target).mkdir(parents=True, exist_ok=True)
            if self.run(["findmnt", "--noheadings", "--mountpoint", target], check=False).returncode != 0:
                self.run(["mount", "--bind", str(self.root / sub), target])

    def _hide_kvm(self) -> None:
        """Show the host a /dev/kvm that QEMU cannot use: lab hosts are TCG-only.

        The machine's /dev/kvm is root-only (no udev to make it root:kvm 0660).  libvirt's
        capability probe still gets KVM, but its cache check finds /dev/kvm unusable for
        libvirt-qemu, declares the cache stale and re-probes QEMU (seconds per binary) on every
        capabilities lookup, define and start.  Guests hang under KVM here anyway.
        """
        if not Path("/dev/kvm").exists():
            return
        stand_in = self.root / "no-kvm"
        stand_in.touch(mode=0o600)
        self.run(["mount", "--bind", str(stand_in), "/dev/kvm"])

    # -- libvirt daemons ----------------------------------------------------------------

    def _pidfile(self, daemon: str) -> Path:
        return self.root / "run" / f"{daemon}.pid"

    @property
    def has_tls(self) -> bool:
        """Say whether the host has its libvirt certificates (its /etc/libvirt/pki)."""
        return (self.root / "etc" / "pki" / "servercert.pem").exists()

    def enable_tls(self) -> None:
        """Restart libvirtd listening with TLS on the certificates the agent's join wrote."""
        if not self.has_tls:
            raise LabError(f"{self.name}: no certificates in {self.root / 'etc' / 'pki'}; join the host first")
        self.reconfigure()
        self.stop_libvirtd()
        self.start_libvirtd()

    def daemon_pid(self, daemon: str) -> int | None:
        """Return the pid of the host's virtlogd/libvirtd if it is running inside this host."""
        pid = procs.read_pidfile(self._pidfile(daemon))
        if pid is None or procs.proc_starttime(pid) is None:
            return None
        if procs.ns_inode(Path(f"/proc/{pid}/ns/mnt")) != procs.ns_inode(self.mountns_path):
            return None  # a stale pid file naming some other process
        return pid

    def _start_daemon(self, daemon: str, extra: list[str]) -> None:
        if self.daemon_pid(daemon) is not None:
            return
        self._pidfile(daemon).unlink(missing_ok=True)
        # -d: the parent returns once the daemon is initialised and its pid file written.
        self.run([daemon, "-d", "-p", f"/run/libvirt/{daemon}.pid", *extra], timeout=DAEMON_START_TIMEOUT)
        pid = self.daemon_pid(daemon)
        if pid is None:
            raise LabError(f"{self.name}: {daemon} did not stay up; see {self.root / 'log'}")
        self.lab.remember_proc(procs.record(pid, daemon, self.name))

    def start_libvirtd(self) -> None:
        """Start virtlogd and libvirtd in the host (no-op for those running) and wait for libvirtd."""
        self._start_daemon("virtlogd", [])
        listen = ["--listen"] if self.lab.listen_config(self) is not None else []
        self._start_daemon("libvirtd", listen)
        deadline = time.monotonic() + DAEMON_START_TIMEOUT
        while True:
            probe = self.run(["virsh", "-c", "qemu:///system", "uri"], check=False, timeout=DAEMON_START_TIMEOUT)
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise LabError(f"{self.name}: libvirtd does not answer: {probe.stderr.strip()}; "
                               f"see {self.root / 'log' / 'libvirtd.log'}")
            time.sleep(0.2)

    def stop_libvirtd(self) -> None:
        """Stop the host's libvirtd (its guests keep running, as with a real restart)."""
        self._stop_daemon("libvirtd")

    def stop_virtlogd(self) -> None:
        """Stop the host's virtlogd."""
        self._stop_daemon("virtlogd")

    def _stop_daemon(self, daemon: str) -> None:
        pid = self.daemon_pid(daemon)
        if pid is not None:
            procs.terminate({pid: None}, grace=15.0)
        self._pidfile(daemon).unlink(missing_ok=True)

    def reconfigure(self) -> None:
        """Rewrite libvirtd.conf/qemu.conf from the lab's settings; restart libvirtd to apply."""
        libvirtd.write_conf(self.root / "etc", self.host_uuid, self.lab.listen_config(self),
                            self.lab.migration_address(self))

    # -- tearing down -------------------------------------------------------------------

    def remove_domains(self) -> list[str]:
        """Destroy and undefine every domain of the host; return their names."""
        if self.daemon_pid("libvirtd") is None:
            return []
        listing = self.run(["virsh", "-q", "-c", "qemu:///system", "list", "--all", "--name"],
                           check=False, timeout=30)
        names = [n.strip() for n in listing.stdout.splitlines() if n.strip()]
        for name in names:
            self.run(["virsh", "-c", "qemu:///system", "destroy", name], check=False, timeout=30)
            self.run(["virsh", "-c", "qemu:///system", "undefine", name, "--nvram",
                      "--managed-save", "--snapshots-metadata", "--checkpoints-metadata"],
                     check=False, timeout=30)
        return names
