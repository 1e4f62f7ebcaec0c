"""Per-host libvirt configuration: a private /etc/libvirt and the daemon settings the lab needs.

Every setting written here is explained in docs/libvirt-facts.md.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

REAL_ETC_LIBVIRT = Path("/etc/libvirt")
# Inside a lab host: its private /etc/libvirt, where `labcloud-agent join --libvirt-pki-dir` writes.
LIBVIRT_PKI_DIR = "/etc/libvirt/pki"


@dataclass(frozen=True)
class ListenConfig:
    """Remote access for libvirtd (needed by migration); TLS when all three paths are given."""

    address: str
    tcp: bool = True
    auth_tcp: str = "none"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None

    @property
    def tls(self) -> bool:
        """Return True if a TLS listener is configured."""
        return self.tls_cert is not None and self.tls_key is not None and self.tls_ca is not None


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_conf(settings: dict[str, object], header: str) -> str:
    """Render settings in libvirt's key = value configuration syntax."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines.append("")
    lines += [f"{key} = {_value(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def libvirtd_conf(host_uuid: str, listen: ListenConfig | None = None) -> str:
    """Return libvirtd.conf for a lab host: its own host UUID, logs to a file, optional listeners."""
    settings: dict[str, object] = {
        # Every lab host shares the machine's SMBIOS UUID; libvirt (and migration) tell hosts
        # apart by this one.
        "host_uuid": host_uuid,
        # No journald here: warnings and errors go to the host's private /var/log/libvirt.
        "log_outputs": "3:file:/var/log/libvirt/libvirtd.log",
        "unix_sock_group": "root",
        "unix_sock_rw_perms": "0770",
    }
    if listen is not None:
        settings["listen_addr"] = listen.address
        settings["listen_tcp"] = listen.tcp
        settings["auth_tcp"] = listen.auth_tcp
        settings["listen_tls"] = listen.tls
        if listen.tls:
            settings["cert_file"] = str(listen.tls_cert)
            settings["key_file"] = str(listen.tls_key)
            settings["ca_file"] = str(listen.tls_ca)
            # Only other hosts' labcloud certificates, not the controller's nor anyone else's.
            settings["tls_allowed_dn_list"] = ["CN=labcloud-host:*"]
    return render_conf(settings, "Written by labcloud's lab (lab/libvirtd.py); see docs/libvirt-facts.md.")


def qemu_conf(migration_address: str | None = None, tls: bool = False) -> str:
    """Return qemu.conf for a lab host: QEMU guests that run without systemd, cgroups or LSMs."""
    settings: dict[str, object] = {
        # No AppArmor/SELinux confinement: the profiles would have to follow the per-host
        # bind mounts. DAC (running QEMU as libvirt-qemu, chown of images) stays on.
        "security_driver": "none",
        "user": "libvirt-qemu",
        "group": "libvirt-qemu",
        "dynamic_ownership": True,
        # Owner remembering keeps reference counts in xattrs on the image; on a directory
        # that several lab hosts share, each libvirtd would count on its own.
        "remember_owner": False,
        # Without systemd/machined libvirt would create its cgroups directly under its own
        # cgroup, and every lab host's libvirtd lives in the same one.
        "cgroup_controllers": [],
        # The per-domain /dev namespace needs mount propagation that a lab host's private
        # mount namespace does not give.
        "namespaces": [],
        "stdio_handler": "logd",
    }
    if migration_address is not None:
        settings["migration_address"] = migration_address
        settings["migration_host"] = migration_address
    if tls:
        # QEMU-to-QEMU migration data (and NBD disk copies) over TLS with the host's certificate.
        settings["migrate_tls_x509_cert_dir"] = f"{LIBVIRT_PKI_DIR}/qemu"
        settings["migrate_tls_x509_verify"] = True
    return render_conf(settings, "Written by labcloud's lab (lab/libvirtd.py); see docs/libvirt-facts.md.")


def prepare_etc(dest: Path, host_uuid: str, listen: ListenConfig | None = None,
                migration_address: str | None = None) -> None:
    """Fill dest with a copy of the machine's /etc/libvirt, rewritten for one lab host."""
    if not (dest / "libvirtd.conf").exists():
        shutil.copytree(REAL_ETC_LIBVIRT, dest, symlinks=True, dirs_exist_ok=True)
        # Domains and networks defined on the machine itself are not this host's.
        for sub in ("qemu/autostart", "qemu/networks/autostart"):
            for link in (dest / sub).glob("*"):
                link.unlink()
        for xml in (dest / "qemu").glob("*.xml"):
            xml.unlink()
    write_conf(dest, host_uuid, listen, migration_address)


def write_conf(dest: Path, host_uuid: str, listen: ListenConfig | None = None,
               migration_address: str | None = None) -> None:
    """(Re)write the host's libvirtd.conf and qemu.conf; a restart of libvirtd applies them."""
    (dest / "libvirtd.conf").write_text(libvirtd_conf(host_uuid, listen))
    (dest / "qemu.conf").write_text(qemu_conf(migration_address, tls=bool(listen and listen.tls)))


# libvirt probes every QEMU binary once per daemon and keeps the result in
# /var/cache/libvirt/qemu/capabilities; each lab host has its own /var/cache/libvirt, so the
# lab copies one host's probe to the others (and across lab runs).  libvirt re-validates
# every file against the binaries, the kernel and the CPU, so a stale copy is only re-probed.
CAPS_CACHE = Path("/var/cache/labcloud/qemu-capabilities")
_HOST_CAPS = Path("qemu") / "capabilities"


def seed_capabilities(host_cache: Path, shared: Path = CAPS_CACHE) -> int:
    """Copy saved QEMU capability probes into a host's /var/cache/libvirt; return how many."""
    dest = host_cache / _HOST_CAPS
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    for src in shared.glob("*.xml") if shared.is_dir() else []:
        if not (dest / src.name).exists():
            shutil.copy2(src, dest / src.name)
            count += 1
    return count


def save_capabilities(host_cache: Path, shared: Path = CAPS_CACHE) -> int:
    """Save a host's QEMU capability probes for the next hosts; return how many."""
    shared.mkdir(parents=True, exist_ok=True)
    count = 0
    for src in (host_cache / _HOST_CAPS).glob("*.xml"):
        tmp = shared / f".{src.name}.tmp"
        shutil.copy2(src, tmp)
        tmp.replace(shared / src.name)
        count += 1
    return count
