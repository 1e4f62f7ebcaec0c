"""Tests of hostagent.seed: the NoCloud files and the ``cidata`` ISO that carries them."""

from __future__ import annotations

import email
import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pycdlib
import pytest
import yaml

from hostagent.seed import (
    SeedNic,
    build_seed_files,
    merge_cloud_config,
    read_seed_iso,
    seed_iso_bytes,
    write_seed_iso,
)

NIC0 = SeedNic(
    mac="52:54:00:12:34:56",  # all digits: YAML 1.1 would read it as a base-60 integer unquoted
    addresses=["10.213.0.120/24"],
    gateway="10.213.0.1",
    dns=["10.213.0.1", "9.9.9.9"],
)
NIC1 = SeedNic(mac="52:54:00:AB:CD:EF", addresses=["192.168.50.7/24"], gateway=None, dns=[])
NAMES = ("meta-data", "network-config", "user-data")


def _files(**overrides: Any) -> dict[str, bytes]:
    arguments: dict[str, Any] = {"instance_id": "vm-0001", "hostname": "web1", "nics": [NIC0]}
    arguments.update(overrides)
    return build_seed_files(**arguments)


def _yaml(data: bytes) -> Any:
    return yaml.safe_load(data)


def _cloud_config(files: dict[str, bytes]) -> dict[str, Any]:
    text = files["user-data"].decode()
    assert text.startswith("#cloud-config\n")
    loaded = _yaml(files["user-data"])
    assert isinstance(loaded, dict)
    return loaded


# --------------------------------------------------------------------------- ISO image


@pytest.fixture
def seed_iso(tmp_path: Path) -> Path:
    path = tmp_path / "seed.iso"
    write_seed_iso(path, _files(nics=[NIC0, NIC1], ssh_keys=["ssh-ed25519 AAAAC3Nza alice@lab"]))
    return path


def test_iso_volume_label_is_exactly_cidata(seed_iso: Path) -> None:
    iso = pycdlib.PyCdlib()
    iso.open(str(seed_iso))
    try:
        assert iso.pvd is not None and iso.joliet_vd is not None
        assert iso.pvd.volume_identifier.rstrip(b" ") == b"cidata"
        assert iso.has_joliet() and iso.has_rock_ridge()
        # blkid prefers the Joliet label when there is one, so it must say cidata too.
        joliet = iso.joliet_vd.volume_identifier.decode("utf-16-be").rstrip(" \x00")
        assert joliet == "cidata"
    finally:
        iso.close()


def test_iso_holds_the_exact_names_in_rock_ridge_and_joliet(seed_iso: Path) -> None:
    expected = _files(nics=[NIC0, NIC1], ssh_keys=["ssh-ed25519 AAAAC3Nza alice@lab"])
    iso = pycdlib.PyCdlib()
    iso.open(str(seed_iso))
    try:
        for name in NAMES:
            for facade in ("rr_path", "joliet_path"):
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, **{facade: f"/{name}"})
                assert out.getvalue() == expected[name], (name, facade)
    finally:
        iso.close()
    assert read_seed_iso(seed_iso) == expected


def test_network_config_on_the_iso(seed_iso: Path) -> None:
    config = _yaml(read_seed_iso(seed_iso)["network-config"])
    assert config["version"] == 2
    eth0 = config["ethernets"]["eth0"]
    assert eth0["match"] == {"macaddress": "52:54:00:12:34:56"}
    assert eth0["set-name"] == "eth0"
    assert eth0["addresses"] == ["10.213.0.120/24"]
    assert eth0["nameservers"] == {"addresses": ["10.213.0.1", "9.9.9.9"]}
    assert eth0["routes"] == [{"to": "default", "via": "10.213.0.1"}]
    eth1 = config["ethernets"]["eth1"]
    assert eth1["match"] == {"macaddress": "52:54:00:ab:cd:ef"}
    assert "routes" not in eth1 and "nameservers" not in eth1


def test_isoinfo_reads_volume_id_cidata(seed_iso: Path) -> None:
    if shutil.which("isoinfo") is None:
        pytest.skip("isoinfo (genisoimage) is not installed")
    output = subprocess.run(["isoinfo", "-d", "-i", str(seed_iso)], capture_output=True, text=True, check=True).stdout
    assert "Volume id: cidata\n" in output
    assert "Joliet" in output and "Rock Ridge" in output


def test_blkid_sees_label_cidata(seed_iso: Path) -> None:
    # cloud-init finds the seed through blkid's LABEL, so check with the real thing.
    if shutil.which("blkid") is None:
        pytest.skip("blkid is not installed")
    label = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "LABEL", str(seed_iso)], capture_output=True, text=True
    ).stdout.strip()
    assert label == "cidata"


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "seed.iso"
    path.write_bytes(b"old")
    write_seed_iso(path, _files())
    assert read_seed_iso(path) == _files()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.iso"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_seed_iso_bytes_round_trip_and_name_clashes(tmp_path: Path) -> None:
    # Names that collide in ISO9660 8.3 form must still be distinct on the image.
    files = {"network-config": b"a", "network-config-extra": b"b", "vendor-data": b""}
    path = tmp_path / "x.iso"
    path.write_bytes(seed_iso_bytes(files))
    assert read_seed_iso(path) == files


@pytest.mark.parametrize("name", ["", "a/b", "x" * 65, ".."])
def test_seed_iso_rejects_bad_file_names(name: str) -> None:
    with pytest.raises(ValueError, match="seed file name"):
        seed_iso_bytes({name: b""})


# --------------------------------------------------------------------------- meta-data, network


def test_meta_data() -> None:
    assert _yaml(_files()["meta-data"]) == {"instance-id": "vm-0001", "local-hostname": "web1"}


def test_two_nics_exactly_one_default_route() -> None:
    config = _yaml(_files(nics=[NIC1, NIC0])["network-config"])
    routes = [eth.get("routes") for eth in config["ethernets"].values()]
    assert routes.count(None) == 1
    assert [r for r in routes if r] == [[{"to": "default", "via": "10.213.0.1"}]]
    assert config["ethernets"]["eth1"]["match"]["macaddress"] == NIC0.mac  # names follow position


def test_two_gateways_is_an_error() -> None:
    other = SeedNic(mac="52:54:00:00:00:09", addresses=["10.9.0.2/24"], gateway="10.9.0.1", dns=[])
    with pytest.raises(ValueError, match="only one NIC may carry the default gateway"):
        _files(nics=[NIC0, other])


def test_explicit_names_and_off_subnet_gateway() -> None:
    nic = SeedNic(mac="52:54:00:00:00:0a", addresses=["203.0.113.9/32"], gateway="203.0.113.1", dns=[], name="ens3")
    eth = _yaml(_files(nics=[nic])["network-config"])["ethernets"]["ens3"]
    assert eth["set-name"] == "ens3"
    assert eth["routes"] == [{"to": "default", "via": "203.0.113.1", "on-link": True}]


def test_nic_without_address_asks_dhcp() -> None:
    eth = _yaml(_files(nics=[SeedNic(mac="52:54:00:00:00:0b")])["network-config"])["ethernets"]["eth0"]
    assert eth["dhcp4"] is True and "addresses" not in eth


@pytest.mark.parametrize(
    ("nic", "message"),
    [
        (SeedNic(mac="52:54:00:00:00", addresses=["10.0.0.2/24"]), "MAC"),
        (SeedNic(mac="52:54:00:00:00:01", addresses=["10.0.0.300/24"]), "10.0.0.300"),
        (SeedNic(mac="52:54:00:00:00:01", addresses=["10.0.0.0/24"]), "network address"),
        (SeedNic(mac="52:54:00:00:00:01", gateway="gw"), "gw"),
        (SeedNic(mac="52:54:00:00:00:01", dns=["8.8.8"]), "8.8.8"),
        (SeedNic(mac="52:54:00:00:00:01", name="bad name"), "interface name"),
    ],
)
def test_bad_nic_values(nic: SeedNic, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _files(nics=[nic])


def test_duplicate_macs_are_an_error() -> None:
    with pytest.raises(ValueError, match="share"):
        _files(nics=[NIC0, SeedNic(mac=NIC0.mac.upper())])


# --------------------------------------------------------------------------- user-data


def test_user_data_defaults() -> None:
    config = _cloud_config(_files())
    assert config == {"hostname": "web1", "manage_etc_hosts": True}


def test_user_data_keys_password_fqdn() -> None:
    config = _cloud_config(_files(ssh_keys=["ssh-ed25519 AAAA a@b", "  "], password="s3cret", fqdn="web1.lab"))
    assert config["fqdn"] == "web1.lab"
    assert config["ssh_authorized_keys"] == ["ssh-ed25519 AAAA a@b"]
    assert config["password"] == "s3cret"
    assert config["chpasswd"] == {"expire": False}
    assert config["ssh_pwauth"] is True
    assert "disable_root" not in config


def test_user_cloud_config_is_merged() -> None:
    theirs = """#cloud-config
hostname: theirs
packages: [nginx]
ssh_authorized_keys:
  - ssh-rsa BBBB c@d
  - ssh-ed25519 AAAA a@b
chpasswd:
  expire: true
disable_root: false
"""
    config = _cloud_config(_files(ssh_keys=["ssh-ed25519 AAAA a@b"], password="pw", user_data=theirs))
    assert config["hostname"] == "theirs"  # theirs wins on conflicts
    assert config["packages"] == ["nginx"]
    assert config["ssh_authorized_keys"] == ["ssh-ed25519 AAAA a@b", "ssh-rsa BBBB c@d"]
    assert config["chpasswd"] == {"expire": True}
    assert config["disable_root"] is False
    assert config["manage_etc_hosts"] is True and config["password"] == "pw"


def test_merge_concatenates_lists_and_merges_mappings() -> None:
    ours = {"packages": ["curl"], "a": {"x": 1, "y": [1]}, "s": "ours"}
    theirs = {"packages": ["curl", "jq"], "a": {"y": [2], "z": 3}, "s": "theirs"}
    assert merge_cloud_config(ours, theirs) == {
        "packages": ["curl", "jq"],
        "a": {"x": 1, "y": [1, 2], "z": 3},
        "s": "theirs",
    }


def test_empty_user_cloud_config_is_fine() -> None:
    assert _cloud_config(_files(user_data="#cloud-config\n")) == _cloud_config(_files())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#cloud-config\npackages: [nginx\n", "not valid cloud-config YAML at line"),
        ("#cloud-config\n- a\n- b\n", "mapping"),
        ("#cloud-config\nx: !!python/object/apply:os.system ['true']\n", "not valid cloud-config YAML"),
    ],
)
def test_invalid_user_cloud_config(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _files(user_data=text)


def test_script_user_data_becomes_multipart() -> None:
    script = "#!/bin/sh\necho hello > /tmp/hello\n"
    files = _files(user_data=script, ssh_keys=["ssh-ed25519 AAAA a@b"])
    message = email.message_from_bytes(files["user-data"])
    assert message.get_content_type() == "multipart/mixed"
    parts = [part for part in message.walk() if not part.is_multipart()]
    assert [part.get_content_type() for part in parts] == ["text/cloud-config", "text/x-shellscript"]
    ours = parts[0].get_payload(decode=True)
    theirs = parts[1].get_payload(decode=True)
    assert isinstance(ours, bytes) and isinstance(theirs, bytes)
    assert _yaml(ours)["ssh_authorized_keys"] == ["ssh-ed25519 AAAA a@b"]
    assert theirs.decode() == script
    assert files == _files(user_data=script, ssh_keys=["ssh-ed25519 AAAA a@b"])  # reproducible


def test_non_ascii_script_survives_multipart() -> None:
    script = "#!/bin/sh\necho 'héllo ✓'\n"
    message = email.message_from_bytes(_files(user_data=script)["user-data"])
    parts = [part for part in message.walk() if not part.is_multipart()]
    payload = parts[1].get_payload(decode=True)
    assert isinstance(payload, bytes) and payload.decode("utf-8") == script


def test_unknown_user_data_is_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match="must start with one of #cloud-config"):
        _files(user_data="apt-get install nginx\n")


def test_empty_password_means_none() -> None:
    assert _files(password="") == _files(password=None)


@pytest.mark.parametrize(("argument", "value"), [("instance_id", ""), ("hostname", "")])
def test_empty_required_values(argument: str, value: str) -> None:
    with pytest.raises(ValueError, match=argument):
        _files(**{argument: value})


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["-J", "-r"], set(NAMES)),
        (["-r"], set(NAMES)),
        (["-J"], set(NAMES)),
        ([], {"META_DAT", "NETWORK_", "USER_DAT"}),  # plain ISO9660 only has 8.3 names
    ],
    ids=["joliet+rr", "rr", "joliet", "plain"],
)
def test_read_seed_iso_of_genisoimage_seeds(tmp_path: Path, flags: list[str], names: set[str]) -> None:
    # Operators' hand-made seeds (cloud-localds, genisoimage) must be readable for diagnostics.
    if shutil.which("genisoimage") is None:
        pytest.skip("genisoimage is not installed")
    source = tmp_path / "src"
    source.mkdir()
    files = _files()
    for name, data in files.items():
        (source / name).write_bytes(data)
    iso = tmp_path / "seed.iso"
    subprocess.run(["genisoimage", "-quiet", "-V", "cidata", *flags, "-o", str(iso), str(source)], check=True)
    found = read_seed_iso(iso)
    assert set(found) == names
    assert sorted(found.values()) == sorted(files.values())
