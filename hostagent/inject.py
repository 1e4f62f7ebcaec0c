"""Offline edits of a VM's disk before its first boot, for images without cloud-init.

libguestfs needs a kernel for its appliance, and there is no ``nbd`` module on the
machines this was built on; what works (SPEC §6): ``qemu-storage-daemon`` exports the
qcow2 overlay as a raw file through FUSE, ``losetup --offset`` maps the root partition,
and it is mounted. Everything is undone in ``finally`` blocks, whatever fails.

The guest's filesystem is untrusted: paths are walked component by component and a
symlink anywhere on the way is refused, so a crafted image cannot make the agent write
outside it.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hostagent import guestfiles
from hostagent.errors import VerbError
from hostagent.seed import SeedNic

log = logging.getLogger(__name__)

SECTOR = 512
EXPORT_WAIT_S = 15.0
MBR_LINUX_TYPES = {0x83}
GPT_SKIP_TYPES = {  # partitions that never hold the root filesystem
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",  # EFI system
    "21686148-6449-6e6f-744e-656564454649",  # BIOS boot
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f",  # Linux swap
}


ReadAt = Callable[[int, int], bytes]


def root_partition_offset(head: bytes, read_at: ReadAt | None = None) -> int:
    """Return the byte offset of the largest Linux partition (MBR or GPT); 0 for a disk without a table."""
    if len(head) < SECTOR or head[510:512] != b"\x55\xaa":
        return 0
    entries = [struct.unpack_from("<B3xB3xII", head, 446 + 16 * i) for i in range(4)]
    if any(kind == 0xEE for _status, kind, _start, _count in entries):
        if read_at is None:
            raise ValueError("a GPT disk needs read_at to read its partition entries")
        return _gpt_root_offset(read_at)
    linux = [(count, start) for _status, kind, start, count in entries if kind in MBR_LINUX_TYPES and count]
    if not linux:
        raise ValueError("the disk has no Linux partition (MBR type 0x83)")
    return max(linux)[1] * SECTOR


def _gpt_root_offset(read_at: ReadAt) -> int:
    header = read_at(SECTOR, 92)
    if header[:8] != b"EFI PART":
        raise ValueError("protective MBR without a GPT header")
    entries_lba, count, size = struct.unpack_from("<QII", header, 72)
    table = read_at(entries_lba * SECTOR, count * size)
    best: tuple[int, int] | None = None
    for i in range(count):
        entry = table[i * size:(i + 1) * size]
        type_guid = _guid(entry[:16])
        first, last = struct.unpack_from("<QQ", entry, 32)
        if type_guid == "00000000-0000-0000-0000-000000000000" or type_guid in GPT_SKIP_TYPES:
            continue
        if best is None or last - first > best[0]:
            best = (last - first, first)
    if best is None:
        raise ValueError("the GPT has no partition that could hold the root filesystem")
    return best[1] * SECTOR


def _guid(raw: bytes) -> str:
    a, b, c = struct.unpack_from("<IHH", raw)
    rest = raw[8:16].hex()
    return f"{a:08x}-{b:04x}-{c:04x}-{rest[:4]}-{rest[4:]}"


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise VerbError(f"{argv[0]} failed: {(proc.stderr or proc.stdout).strip()}", 500, "inject")
    return proc.stdout


def _is_mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as info:
        return any(line.split()[4] == str(path) for line in info)


@contextmanager
def mounted_root(disk: str) -> Iterator[Path]:
    """Mount the root filesystem of a qcow2 disk read-write; unmount and detach everything afterwards."""
    with tempfile.TemporaryDirectory(prefix="labcloud-inject-") as tmp:
        export = Path(tmp) / "disk.raw"
        export.touch()
        root = Path(tmp) / "root"
        root.mkdir()
        blockdev = {"driver": "qcow2", "node-name": "disk", "file": {"driver": "file", "filename": disk}}
        qsd = subprocess.Popen(
            ["qemu-storage-daemon", "--blockdev", json.dumps(blockdev),
             "--export", f"type=fuse,id=exp,node-name=disk,mountpoint={export},writable=on"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        loop = ""
        try:
            deadline = time.monotonic() + EXPORT_WAIT_S
            while not _is_mounted(export):
                if qsd.poll() is not None or time.monotonic() > deadline:
                    err = qsd.stderr.read().decode(errors="replace") if qsd.stderr and qsd.poll() is not None else ""
                    raise VerbError(f"qemu-storage-daemon did not export {disk}: {err.strip()}", 500, "inject")
                time.sleep(0.05)
            with open(export, "rb") as raw:
                def read_at(offset: int, size: int) -> bytes:
                    raw.seek(offset)
                    return raw.read(size)
                offset = root_partition_offset(read_at(0, SECTOR), read_at)
            loop = _run(["losetup", "--find", "--show", "--offset", str(offset), str(export)]).strip()
            _run(["mount", loop, str(root)])
            try:
                yield root
            finally:
                _run(["umount", str(root)])
        except ValueError as exc:
            raise VerbError(f"cannot find the root filesystem of {disk}: {exc}", 409, "inject") from exc
        finally:
            if loop:
                subprocess.run(["losetup", "-d", loop], capture_output=True, timeout=60, check=False)
            qsd.terminate()
            try:
                qsd.wait(15)
            except subprocess.TimeoutExpired:
                qsd.kill()
                qsd.wait(5)
            if _is_mounted(export):  # qemu-storage-daemon removes its FUSE mount on exit; be sure
                subprocess.run(["umount", "-l", str(export)], capture_output=True, timeout=60, check=False)


def _safe_target(root: Path, path: str, create_dirs: bool) -> Path | None:
    """Return root/path if no component on the way is a symlink; None when a parent is missing."""
    current = root
    parts = Path(path).relative_to("/").parts
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise VerbError(f"the guest's {path} goes through a symlink; not writing it", 409, "inject")
        if not current.exists():
            if not create_dirs:
                return None
            current.mkdir(mode=0o755)
    target = current / parts[-1]
    if target.is_symlink():
        raise VerbError(f"the guest's {path} is a symlink; not writing it", 409, "inject")
    return target


def write_files(root: Path, files: Sequence[guestfiles.GuestFile]) -> list[str]:
    """Write files into a mounted guest root (never through symlinks); return the paths written."""
    written = []
    for item in files:
        target = _safe_target(root, item.path, create_dirs=True)
        assert target is not None
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, item.mode)
        with os.fdopen(fd, "w") as out:
            out.write(item.content)
        os.chmod(target, item.mode, follow_symlinks=False)
        written.append(item.path)
    return written


def plan(root: Path, hostname: str, nics: Sequence[SeedNic]) -> list[guestfiles.GuestFile]:
    """Return the files for this guest: hostname, hosts, and the config of each network stack it has."""
    files = guestfiles.hostname_files(hostname, nics)
    found = False
    for marker, render in guestfiles.STACKS:
        target = _safe_target(root, marker + "/x", create_dirs=False)
        if target is not None and target.parent.is_dir():
            files += render(nics)
            found = True
    if not found:
        raise VerbError("the image has none of ifupdown (/etc/network), netplan (/etc/netplan) or NetworkManager "
                        "(/etc/NetworkManager); mark it as having cloud-init or install one", 409, "inject")
    return files


def inject_network(disk: str, hostname: str, nics: Sequence[SeedNic]) -> list[str]:
    """Write hostname, /etc/hosts and static network config into a VM's disk; return the paths written."""
    started = time.monotonic()
    with mounted_root(disk) as root:
        written = write_files(root, plan(root, hostname, nics))
    log.info("wrote %s into %s in %.1f s", ", ".join(written), disk, time.monotonic() - started)
    return written
