"""The controller's certificate authority for the agent channel.

The CA signs one certificate per host (from a CSR made on the host, so a host's
key never leaves it), the controller's HTTPS server certificate and the client
certificate the controller presents to agents. Clients that know only the CA's
fingerprint (an agent joining, the `labcloud` CLI logging in) fetch the CA with
`fetch_pinned_ca`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HOST_CN_PREFIX = "labcloud-host:"


def new_key() -> ec.EllipticCurvePrivateKey:
    """Return a new P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Serialise a private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    """Serialise a certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def fingerprint(cert_or_pem: x509.Certificate | bytes | str) -> str:
    """Return the SHA-256 fingerprint (hex) of a certificate's DER encoding."""
    if isinstance(cert_or_pem, str):
        cert_or_pem = cert_or_pem.encode()
    cert = cert_or_pem if isinstance(cert_or_pem, x509.Certificate) else x509.load_pem_x509_certificate(cert_or_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def make_csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> bytes:
    """Return a PEM certificate signing request for common_name."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


@dataclass
class CertificateAuthority:
    """A CA kept as two files in the controller's data directory."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def load_or_create(cls, directory: Path) -> CertificateAuthority:
        """Load ca.pem/ca.key from directory, creating them on first use."""
        cert_path, key_path = directory / "ca.pem", directory / "ca.key"
        if cert_path.exists() and key_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            return cls(x509.load_pem_x509_certificate(cert_path.read_bytes()), key)
        key = new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "labcloud CA")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(key_path, key_pem(key))
        cert_path.write_bytes(cert_pem(cert))
        return cls(cert, key)

    @property
    def pem(self) -> bytes:
        """Return the CA certificate as PEM."""
        return cert_pem(self.cert)

    def issue(
        self,
        public_key: ec.EllipticCurvePublicKey,
        common_name: str,
        *,
        names: list[str] = (),  # type: ignore[assignment]
        server: bool = False,
        client: bool = False,
        days: int = 825,
    ) -> x509.Certificate:
        """Sign a certificate for public_key with the given identity and usages."""
        now = dt.datetime.now(dt.UTC)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        if names:
            builder = builder.add_extension(_san(list(names)), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def sign_csr(self, csr_pem: bytes, common_name: str, names: list[str]) -> x509.Certificate:
        """Sign a host's CSR; the identity comes from the controller, not from the CSR."""
        csr = x509.load_pem_x509_csr(csr_pem)
        if not csr.is_signature_valid:
            raise ValueError("the certificate request's signature is invalid")
        public_key = csr.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise ValueError("the certificate request must use an EC P-256 key")
        return self.issue(public_key, common_name, names=names, server=True, client=True)

    def ensure_pair(
        self, directory: Path, stem: str, common_name: str, names: list[str], server: bool, client: bool
    ) -> tuple[Path, Path]:
        """Make (once) a key and certificate signed by this CA; return their paths."""
        cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
        if cert_path.exists() and key_path.exists():
            existing = x509.load_pem_x509_certificate(cert_path.read_bytes())
            if existing.issuer == self.cert.subject and _names_of(existing) >= set(names):
                return cert_path, key_path
        key = new_key()
        cert = self.issue(key.public_key(), common_name, names=names, server=server, client=client)
        write_private(key_path, key_pem(key))
        cert_path.write_bytes(cert_pem(cert) + self.pem)
        return cert_path, key_path


def _names_of(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))


def verify_issued_by(leaf_der: bytes, ca_pem: bytes) -> None:
    """Raise ValueError unless the DER certificate was signed by the PEM CA."""
    leaf = x509.load_der_x509_certificate(leaf_der)
    ca = x509.load_pem_x509_certificate(ca_pem)
    try:
        leaf.verify_directly_issued_by(ca)
    except Exception as exc:
        raise ValueError(f"certificate not issued by the pinned CA: {exc}") from exc


class PinError(ValueError):
    """The server did not hand out the CA whose fingerprint was pinned."""


def fetch_pinned_ca(url: str, ca_fingerprint: str, timeout: float = 30) -> bytes:
    """Fetch a controller's CA (PEM) and accept it only if it hashes to ca_fingerprint.

    The channel cannot be verified before the CA is known, so this one request
    trusts the pin instead: the CA must hash to the fingerprint the caller got
    out of band (a join token, the controller's start-up message), and the
    server's certificate must be issued by that CA. Raises PinError when either
    check fails, OSError when the server cannot be reached.
    """
    parsed = urlparse(url)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # replaced by the pin checks below
    conn = http.client.HTTPSConnection(parsed.hostname or "", parsed.port or 443, context=ctx, timeout=timeout)
    try:
        conn.request("GET", "/api/v1/pki/ca.pem")
        resp = conn.getresponse()
        body = resp.read()
        peer = conn.sock.getpeercert(binary_form=True) if conn.sock else None
    finally:
        conn.close()
    if resp.status != 200 or peer is None:
        raise PinError(f"{url} did not hand out its CA (HTTP {resp.status}); is it a labcloud controller?")
    try:
        actual = fingerprint(body)
    except ValueError as exc:
        raise PinError(f"{url} handed out something that is not a certificate: {exc}") from exc
    if actual != ca_fingerprint.lower():
        raise PinError(f"the controller's CA has fingerprint {actual}, not the expected one: wrong URL, "
                       "or someone in between")
    try:
        verify_issued_by(peer, body)
    except ValueError as exc:
        raise PinError(f"the controller's TLS certificate is not from its CA: {exc}") from exc
    return body
