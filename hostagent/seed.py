"""cloud-init NoCloud seed: the files that give a guest its hostname, keys and static IPs.

The guest finds the seed as a filesystem labelled ``cidata`` (attached as a virtio
disk) holding ``meta-data``, ``user-data`` and ``network-config``. Networking is a
netplan-style version 2 config matched by MAC, so no DHCP is needed (SPEC §6).

User decisions made here:

* SSH keys and the password go to cloud-init's *default user* (``debian`` on
  Debian images), through the top-level ``ssh_authorized_keys`` and ``password``
  keys, so labcloud never hard-codes a user name. Root login stays as cloud-init
  leaves it (disabled, pointing at the default user); a caller who wants root can
  say ``disable_root: false`` in their own cloud-config.
* An empty password means no password, like None: nobody wants an empty login.
* A password may be plain text or a crypt(3) hash (``$6$…``); cloud-init detects
  hashes. It is stored on the seed, which the guest can read: prefer hashes.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any

import pycdlib
import yaml

VOLUME_LABEL = "cidata"
CLOUD_CONFIG_HEADER = "#cloud-config"

# Headers cloud-init recognises for other user-data parts, and their MIME types.
_PART_TYPES = (
    ("#cloud-config-archive", "cloud-config-archive"),
    ("#cloud-boothook", "cloud-boothook"),
    ("#part-handler", "part-handler"),
    ("#include-once", "x-include-once-url"),
    ("#include", "x-include-url"),
    ("#upstart-job", "upstart-job"),
    ("#!", "x-shellscript"),
)
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,14}$")


@dataclass(frozen=True)
class SeedNic:
    """Static addressing for one guest NIC, matched by its MAC address."""

    mac: str
    addresses: list[str] = field(default_factory=list)
    gateway: str | None = None
    dns: list[str] = field(default_factory=list)
    name: str = ""


# --------------------------------------------------------------------------- files


def build_seed_files(
    *,
    instance_id: str,
    hostname: str,
    nics: Sequence[SeedNic],
    ssh_keys: Sequence[str] = (),
    password: str | None = None,
    user_data: str | None = None,
    fqdn: str | None = None,
) -> dict[str, bytes]:
    """Return the NoCloud files ``meta-data``, ``user-data`` and ``network-config``.

    Raises ValueError on bad addresses, more than one default gateway, or
    user-data that is neither valid cloud-config nor another part type cloud-init knows.
    """
    if not instance_id:
        raise ValueError("instance_id must not be empty")
    if not hostname:
        raise ValueError("hostname must not be empty")
    meta = {"instance-id": instance_id, "local-hostname": hostname}
    ours = _base_cloud_config(hostname, fqdn, ssh_keys, password)
    return {
        "meta-data": _dump_yaml(meta).encode(),
        "user-data": _user_data(ours, user_data).encode(),
        "network-config": _dump_yaml(network_config(nics)).encode(),
    }


def _dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=False, allow_unicode=True)


def _base_cloud_config(
    hostname: str, fqdn: str | None, ssh_keys: Sequence[str], password: str | None
) -> dict[str, Any]:
    config: dict[str, Any] = {"hostname": hostname}
    if fqdn:
        config["fqdn"] = fqdn
    config["manage_etc_hosts"] = True
    keys = [key.strip() for key in ssh_keys if key.strip()]
    if keys:
        config["ssh_authorized_keys"] = keys
    if password:  # None or "" both mean: no password login
        config["password"] = password
        config["chpasswd"] = {"expire": False}
        config["ssh_pwauth"] = True
    return config


def network_config(nics: Sequence[SeedNic]) -> dict[str, Any]:
    """Return a network-config version 2 dict; only the NIC with a gateway gets the default route."""
    gateways = [nic for nic in nics if nic.gateway]
    if len(gateways) > 1:
        macs = ", ".join(nic.mac for nic in gateways)
        raise ValueError(f"only one NIC may carry the default gateway; NICs {macs} each have one")
    ethernets: dict[str, Any] = {}
    seen_macs: set[str] = set()
    for position, nic in enumerate(nics):
        name = nic.name or f"eth{position}"
        mac = nic.mac.lower()
        if not _MAC_RE.match(mac):
            raise ValueError(f"MAC address {nic.mac!r} is not of the form 52:54:00:xx:xx:xx")
        if not _IFNAME_RE.match(name):
            raise ValueError(f"interface name {name!r} is not a valid Linux interface name")
        if name in ethernets or mac in seen_macs:
            raise ValueError(f"two NICs share the interface name {name!r} or MAC {mac}")
        seen_macs.add(mac)
        ethernets[name] = _ethernet(nic, name, mac)
    return {"version": 2, "ethernets": ethernets}


def _ethernet(nic: SeedNic, name: str, mac: str) -> dict[str, Any]:
    try:
        interfaces = [ipaddress.ip_interface(address) for address in nic.addresses]
        dns = [str(ipaddress.ip_address(server)) for server in nic.dns]
        gateway = ipaddress.ip_address(nic.gateway) if nic.gateway else None
    except ValueError as exc:
        raise ValueError(f"NIC {mac}: {exc}") from exc
    for interface in interfaces:
        if interface.network.prefixlen == interface.max_prefixlen and interface.version == 4:
            continue  # a /32 is legitimate; it just needs an on-link gateway
        if interface.ip == interface.network.network_address:
            raise ValueError(f"NIC {mac}: {interface} is a network address, not a host address")
    entry: dict[str, Any] = {"match": {"macaddress": mac}, "set-name": name}
    if interfaces:
        entry["dhcp4"] = False
        entry["addresses"] = [str(interface) for interface in interfaces]
    else:
        # No static address for this NIC: let it ask DHCP rather than stay dark.
        entry["dhcp4"] = True
    if dns:
        entry["nameservers"] = {"addresses": dns}
    if gateway is not None:
        route: dict[str, Any] = {"to": "default", "via": str(gateway)}
        if not any(gateway in interface.network for interface in interfaces):
            route["on-link"] = True  # gateway outside our subnets (e.g. a /32 setup)
        entry["routes"] = [route]
    return entry


# --------------------------------------------------------------------------- user-data


def _user_data(ours: dict[str, Any], theirs: str | None) -> str:
    ours_text = CLOUD_CONFIG_HEADER + "\n" + _dump_yaml(ours)
    if theirs is None or not theirs.strip():
        return ours_text
    stripped = theirs.lstrip()
    if stripped.splitlines()[0].strip() == CLOUD_CONFIG_HEADER:
        merged = merge_cloud_config(ours, parse_cloud_config(stripped))
        return CLOUD_CONFIG_HEADER + "\n" + _dump_yaml(merged)
    return _multipart(ours_text, stripped)


def parse_cloud_config(text: str) -> dict[str, Any]:
    """Parse a ``#cloud-config`` document into a dict; raises ValueError with the YAML error."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValueError(f"user_data is not valid cloud-config YAML{where}: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"user_data cloud-config must be a YAML mapping of keys, not a {type(data).__name__}")
    return data


def merge_cloud_config(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """Merge two cloud-configs: theirs wins, mappings merge recursively, lists are concatenated.

    Concatenation keeps ``ssh_authorized_keys``, ``packages``, ``runcmd``… of both
    sides (ours first, duplicates dropped), which cloud-init's own default merge of
    two parts would not do (it replaces lists).
    """
    merged = dict(ours)
    for key, value in theirs.items():
        current = merged.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged[key] = merge_cloud_config(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            merged[key] = current + [item for item in value if item not in current]
        else:
            merged[key] = value
    return merged


def _part_subtype(text: str) -> str:
    for header, subtype in _PART_TYPES:
        if text.startswith(header):
            return subtype
    known = ", ".join([CLOUD_CONFIG_HEADER] + [header for header, _ in _PART_TYPES])
    raise ValueError(f"user_data must start with one of {known} (cloud-init ignores anything else)")


def _text_part(text: str, subtype: str, filename: str) -> MIMEText:
    charset = "us-ascii" if text.isascii() else "utf-8"
    part = MIMEText(text, subtype, charset)
    part.add_header("Content-Disposition", "attachment", filename=filename)
    return part


def _multipart(ours_text: str, theirs: str) -> str:
    """Return a MIME multipart user-data with our cloud-config first, then the caller's part."""
    message = MIMEMultipart()
    message.attach(_text_part(ours_text, "cloud-config", "labcloud.cfg"))
    message.attach(_text_part(theirs, _part_subtype(theirs), "user-data"))
    # A boundary derived from the content keeps the seed reproducible for equal
    # input; the random default would make every build differ.
    digest = hashlib.sha256((ours_text + "\0" + theirs).encode()).hexdigest()[:32]
    message.set_boundary(f"==labcloud-{digest}==")
    return message.as_string()


# --------------------------------------------------------------------------- ISO image


def _iso_names(files: dict[str, bytes]) -> dict[str, str]:
    """Map each file name to a unique ISO9660 level-1 name (8.3, upper case)."""
    names: dict[str, str] = {}
    for name in files:
        if not name or "/" in name or len(name) > 64 or name in (".", ".."):
            raise ValueError(f"seed file name {name!r} must be a plain name of at most 64 characters")
        stem = re.sub(r"[^A-Z0-9_]", "_", name.upper())[:8] or "FILE"
        candidate, counter = stem, 0
        while f"/{candidate}.;1" in names.values():
            counter += 1
            candidate = f"{stem[: 8 - len(str(counter))]}{counter}"
        names[name] = f"/{candidate}.;1"
    return names


def seed_iso_bytes(files: dict[str, bytes]) -> bytes:
    """Return an ISO9660 image labelled ``cidata`` holding ``files`` under their exact names.

    Rock Ridge and Joliet carry the real names (``meta-data``…) next to the 8.3
    ISO9660 ones, which is what Linux and cloud-init read.
    """
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, vol_ident=VOLUME_LABEL, joliet=3, rock_ridge="1.09")
    try:
        for name, iso_path in _iso_names(files).items():
            data = files[name]
            iso.add_fp(io.BytesIO(data), len(data), iso_path, rr_name=name, joliet_path="/" + name)
        out = io.BytesIO()
        iso.write_fp(out)
    finally:
        iso.close()
    return out.getvalue()


def write_seed_iso(path: Path, files: dict[str, bytes]) -> None:
    """Write the seed ISO to ``path`` atomically (a half-written seed never appears)."""
    data = seed_iso_bytes(files)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, 0o644)  # QEMU opens it as another user (SPEC §6)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def read_seed_iso(path: Path) -> dict[str, bytes]:
    """Return the files of a seed ISO by their Rock Ridge (or Joliet, or ISO9660) names."""
    iso = pycdlib.PyCdlib()
    with open(path, "rb") as fp:
        iso.open_fp(fp)
        try:
            return _read_root(iso)
        finally:
            iso.close()


def _read_root(iso: pycdlib.PyCdlib) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    facade_kind = "rr_path" if iso.has_rock_ridge() else "joliet_path" if iso.has_joliet() else "iso_path"
    for child in iso.list_children(**{facade_kind: "/"}):
        if child is None or child.is_dot() or child.is_dotdot() or child.is_dir():
            continue
        if facade_kind == "rr_path":
            name = child.rock_ridge.name().decode()
        elif facade_kind == "joliet_path":
            name = child.file_identifier().decode("utf-16-be").split(";")[0]
        else:
            name = child.file_identifier().decode().split(";")[0].rstrip(".")
        out = io.BytesIO()
        lookup = name if facade_kind != "iso_path" else child.file_identifier().decode()
        iso.get_file_from_iso_fp(out, **{facade_kind: "/" + lookup})
        files[name] = out.getvalue()
    return files


def read_seed_bytes(data: bytes) -> dict[str, bytes]:
    """Return the files of a seed ISO held in memory."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        return _read_root(iso)
    finally:
        iso.close()


def renumber(files: dict[str, bytes], instance_id: str, nics: Sequence[SeedNic]) -> dict[str, bytes]:
    """Return seed files with a new network-config and instance-id; user-data stays as it was.

    cloud-init applies network-config once per instance: the new instance-id makes it
    apply the new addresses at the next boot.
    """
    meta = yaml.safe_load(files.get("meta-data", b"") or b"{}") or {}
    if not isinstance(meta, dict):
        raise ValueError("the seed's meta-data is not a YAML mapping")
    meta["instance-id"] = instance_id
    return dict(files, **{"meta-data": _dump_yaml(meta).encode(),
                          "network-config": _dump_yaml(network_config(nics)).encode()})
