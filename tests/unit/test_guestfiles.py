"""Network files for images without cloud-init, and writing them safely into a guest's root."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import yaml

from hostagent import guestfiles
from hostagent.errors import VerbError
from hostagent.inject import SECTOR, plan, root_partition_offset, write_files
from hostagent.seed import SeedNic

NICS = [SeedNic(mac="52:54:00:AA:00:01", addresses=["10.0.0.5/24"], gateway="10.0.0.1", dns=["10.0.0.2"],
                name="eth0"),
        SeedNic(mac="52:54:00:aa:00:02", addresses=["10.2.0.5/24"], name="eth1")]


def test_ifupdown_stanzas_and_names_by_mac() -> None:
    interfaces, rules = guestfiles.ifupdown_files(NICS)
    assert "iface eth0 inet static\n    address 10.0.0.5/24\n    gateway 10.0.0.1\n    dns-nameservers 10.0.0.2" \
        in interfaces.content
    assert "iface eth1 inet static\n    address 10.2.0.5/24\n" in interfaces.content
    assert interfaces.content.count("gateway") == 1  # one default route
    assert 'ATTR{address}=="52:54:00:aa:00:01", NAME="eth0"' in rules.content


def test_netplan_matches_by_mac_with_one_default_route() -> None:
    (netplan,) = guestfiles.netplan_files(NICS)
    assert netplan.mode == 0o600
    eth = yaml.safe_load(netplan.content)["network"]["ethernets"]
    assert eth["eth0"]["match"] == {"macaddress": "52:54:00:aa:00:01"}
    assert eth["eth0"]["routes"] == [{"to": "default", "via": "10.0.0.1"}]
    assert "routes" not in eth["eth1"]


def test_networkmanager_keyfiles() -> None:
    first, second = guestfiles.networkmanager_files(NICS)
    assert first.mode == 0o600
    assert "mac-address=52:54:00:AA:00:01" in first.content
    assert "address1=10.0.0.5/24,10.0.0.1" in first.content and "dns=10.0.0.2;" in first.content
    assert "never-default=true" in second.content and "never-default" not in first.content


def test_hostname_and_hosts() -> None:
    hostname, hosts = guestfiles.hostname_files("web1", NICS)
    assert hostname.content == "web1\n"
    assert "10.0.0.5\tweb1" in hosts.content and "127.0.1.1\tweb1" in hosts.content


def mbr(*parts: tuple[int, int, int]) -> bytes:
    """A boot sector with partitions (type, first LBA, sectors)."""
    sector = bytearray(SECTOR)
    for i, (kind, start, count) in enumerate(parts):
        struct.pack_into("<B3xB3xII", sector, 446 + 16 * i, 0x80 if i == 0 else 0, kind, start, count)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def test_root_partition_offset_mbr() -> None:
    assert root_partition_offset(mbr((0x83, 2048, 4_000_000))) == 2048 * SECTOR  # the lab's image
    assert root_partition_offset(mbr((0x82, 2048, 8_000_000), (0x83, 8_002_048, 1_000_000))) == 8_002_048 * SECTOR
    assert root_partition_offset(bytes(SECTOR)) == 0  # no table: a filesystem on the whole disk
    with pytest.raises(ValueError, match="no Linux partition"):
        root_partition_offset(mbr((0x07, 2048, 1000)))


def test_root_partition_offset_gpt() -> None:
    disk = bytearray(SECTOR * 40)
    disk[:SECTOR] = mbr((0xEE, 1, 0xFFFFFFFF))
    disk[SECTOR:SECTOR + 8] = b"EFI PART"
    struct.pack_into("<QII", disk, SECTOR + 72, 2, 4, 128)
    esp = bytes.fromhex("28732ac11ff8d211ba4b00a0c93ec93b")  # EFI system partition, on disk byte order
    linux = bytes.fromhex("af3dc60f838472478e793d69d8477de4")  # Linux filesystem data
    for i, (guid, first, last) in enumerate(((esp, 2048, 1_000_000), (linux, 1_002_048, 9_000_000))):
        base = 2 * SECTOR + i * 128
        disk[base:base + 16] = guid
        struct.pack_into("<QQ", disk, base + 32, first, last)
    data = bytes(disk)
    assert root_partition_offset(data[:SECTOR], lambda off, size: data[off:off + size]) == 1_002_048 * SECTOR


def guest_root(tmp_path: Path, *dirs: str) -> Path:
    """A directory standing in for a mounted guest root with some directories."""
    root = tmp_path / "root"
    for d in ("etc", *dirs):
        (root / d.lstrip("/")).mkdir(parents=True, exist_ok=True)
    return root


def test_plan_writes_the_stacks_the_disk_has(tmp_path: Path) -> None:
    root = guest_root(tmp_path, "/etc/netplan")
    written = write_files(root, plan(root, "web1", NICS))
    assert written == ["/etc/hostname", "/etc/hosts", "/etc/netplan/60-labcloud.yaml"]
    assert (root / "etc/netplan/60-labcloud.yaml").stat().st_mode & 0o777 == 0o600
    root2 = guest_root(tmp_path / "b", "/etc/network", "/etc/NetworkManager")
    paths = write_files(root2, plan(root2, "web1", NICS))
    assert "/etc/network/interfaces.d/labcloud" in paths and "/etc/udev/rules.d/70-labcloud-net.rules" in paths
    assert "/etc/NetworkManager/system-connections/labcloud-eth1.nmconnection" in paths


def test_plan_refuses_a_disk_without_a_network_stack(tmp_path: Path) -> None:
    with pytest.raises(VerbError, match="none of ifupdown"):
        plan(guest_root(tmp_path), "web1", NICS)


def test_symlinks_in_the_guest_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "host-etc"
    outside.mkdir()
    root = guest_root(tmp_path)
    (root / "etc" / "netplan").symlink_to(outside)  # a crafted image pointing at the host
    with pytest.raises(VerbError, match="symlink"):
        write_files(root, guestfiles.netplan_files(NICS))
    (root / "etc" / "hostname").symlink_to(outside / "hostname")
    with pytest.raises(VerbError, match="symlink"):
        write_files(root, guestfiles.hostname_files("web1", NICS))
    assert list(outside.iterdir()) == []
