"""TLS for the servers of the controller and the agent, in a module of its own.

The agent imports this, not `controller.server`: that would load the whole controller
(SQLite, the scheduler) into every agent for one function, nor `controller.pki`
(cryptography) for one name.
"""

from __future__ import annotations

import ssl

from cheroot.ssl.builtin import BuiltinSSLAdapter

# The certificate subject the controller presents to agents; agents serve no other client.
CONTROLLER_CLIENT_CN = "labcloud-controller"


def server_tls(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """Return a server's TLS context; with client_ca, clients must present a certificate it signed."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(client_ca)
    return ctx


def tls_adapter(cert: str, key: str, client_ca: str | None = None) -> BuiltinSSLAdapter:
    """Return a cheroot TLS adapter around server_tls()."""
    adapter = BuiltinSSLAdapter(cert, key)
    adapter.context = server_tls(cert, key, client_ca)
    return adapter
