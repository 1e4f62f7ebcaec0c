"""Enrolment: pin the controller's CA from the join token, send a CSR, keep the certificate."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

import libvirt
import requests
from lxml import etree

from controller import pki
from controller.pki import key_pem, make_csr, new_key, write_private
from hostagent.config import AgentConfig


class JoinError(Exception):
    """Enrolment failed; the message says why and what to do."""


def parse_token(token: str) -> tuple[str, str]:
    """Split 'lcjoin.SECRET.CAFINGERPRINT'; return (token, ca_fingerprint)."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != "lcjoin" or len(parts[2]) != 64:
        raise JoinError("malformed join token; copy it whole from POST /api/v1/hosts/join-tokens")
    return token, parts[2].lower()


def fetch_pinned_ca(url: str, ca_fingerprint: str, timeout: float = 30) -> bytes:
    """Fetch the controller's CA and accept it only if it matches the join token's fingerprint."""
    try:
        return pki.fetch_pinned_ca(url, ca_fingerprint, timeout)
    except pki.PinError as exc:
        raise JoinError(f"{exc} (the fingerprint comes from the join token)") from exc
    except OSError as exc:
        raise JoinError(f"cannot reach the controller at {url}: {exc}") from exc


def host_uuid(uri: str) -> str:
    """Return libvirt's host UUID (distinct per host even where hostnames repeat)."""
    conn = libvirt.open(uri)
    try:
        caps = etree.fromstring(conn.getCapabilities().encode(), etree.XMLParser(resolve_entities=False))
    finally:
        conn.close()
    value = caps.findtext("host/uuid")
    if not value:
        raise JoinError("libvirt reports no host UUID; set host_uuid in libvirtd.conf")
    return value


def local_address_towards(url: str) -> str:
    """Return this host's address on the route to the controller (no packet is sent)."""
    parsed = urlparse(url)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((parsed.hostname or "127.0.0.1", parsed.port or 443))
        return str(s.getsockname()[0])


def write_libvirt_pki(directory: Path, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
    """Lay out the host's certificate for libvirtd (pkipath names) and for QEMU's migration TLS.

    One certificate serves both roles: it names the host's address and allows
    server and client authentication.
    """
    qemu = directory / "qemu"
    qemu.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    for role in ("server", "client"):
        (directory / f"{role}cert.pem").write_bytes(cert_pem)
        write_private(directory / f"{role}key.pem", key_pem)
        (qemu / f"{role}-cert.pem").write_bytes(cert_pem)
        write_private(qemu / f"{role}-key.pem", key_pem)
        try:  # QEMU runs as libvirt-qemu and reads its key itself
            shutil.chown(qemu / f"{role}-key.pem", group="libvirt-qemu")
            (qemu / f"{role}-key.pem").chmod(0o640)
        except (LookupError, PermissionError):
            pass
    (directory / "cacert.pem").write_bytes(ca_pem)
    (qemu / "ca-cert.pem").write_bytes(ca_pem)


def join(url: str, token: str, config_path: Path, *, name: str, address: str | None, port: int,
         pool_path: str, virt_type: str, libvirt_uri: str = "qemu:///system",
         libvirt_pki_dir: str | None = None, shared_pool_path: str | None = None,
         shared_pool_unsafe: bool = False, switch: str = "linux") -> AgentConfig:
    """Enrol this host with the controller and write its configuration."""
    url = url.rstrip("/")
    token, pin = parse_token(token)
    ca_pem = fetch_pinned_ca(url, pin)
    config_dir = config_path.parent
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "ca.pem").write_bytes(ca_pem)
    uuid = host_uuid(libvirt_uri)
    address = address or local_address_towards(url)
    key = new_key()
    resp = requests.post(
        f"{url}/api/v1/hosts/join",
        json={"token": token, "csr": make_csr(key, uuid).decode(), "host_uuid": uuid, "name": name,
              "address": address, "port": port},
        verify=str(config_dir / "ca.pem"), timeout=30,
    )
    if resp.status_code != 201:
        try:
            message = resp.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {resp.status_code}"
        raise JoinError(f"the controller refused the join: {message}")
    data = resp.json()
    cfg = AgentConfig(controller_url=url, agent_channel_url=data["agent_url"], host_id=uuid, name=name,
                      address=address, port=port, pool_path=pool_path, virt_type=virt_type,
                      libvirt_uri=libvirt_uri, config_dir=str(config_dir), libvirt_pki_dir=libvirt_pki_dir,
                      shared_pool_path=shared_pool_path, shared_pool_unsafe=shared_pool_unsafe,
                      switch=switch)
    write_private(cfg.key_path, key_pem(key))
    cfg.cert_path.write_bytes(data["certificate"].encode())
    if libvirt_pki_dir:
        write_libvirt_pki(Path(libvirt_pki_dir), ca_pem, data["certificate"].encode(), key_pem(key))
    cfg.save(config_path)
    return cfg
