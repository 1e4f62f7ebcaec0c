"""Hosts: one-time join tokens, enrolment, heartbeats and down detection."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import secrets
from typing import Any

from controller import events, sync
from controller.core import Core
from controller.db import now
from controller.errors import BadRequest, Conflict, Unauthorized
from controller.pki import HOST_CN_PREFIX, cert_pem, fingerprint

log = logging.getLogger(__name__)
TOKEN_PREFIX = "lcjoin"  # noqa: S105 - a prefix, not a secret


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_join_token(core: Core, user: dict[str, Any]) -> dict[str, Any]:
    """Make a one-time join token; it carries the CA fingerprint the agent pins."""
    secret = secrets.token_urlsafe(24)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=core.config.join_token_ttl_s)
    with core.db.write() as w:
        w.execute(
            "INSERT INTO join_tokens (token_hash, created_by, created_at, expires_at) VALUES (?, ?, ?, ?)",
            [_hash(secret), user["id"], now(), expires.isoformat(timespec="seconds")],
        )
        events.record(core.db, "host.join_token", "host", None, "ok", "", user["username"])
    token = f"{TOKEN_PREFIX}.{secret}.{fingerprint(core.ca.cert)}"
    return {"token": token, "expires_at": expires.isoformat(timespec="seconds"),
            "command": f"labcloud-agent join {core.config.public_url} {token}"}


def join(core: Core, body: dict[str, Any], remote_addr: str | None) -> dict[str, Any]:
    """Enrol a host: spend the token, sign its CSR, record it."""
    for key in ("token", "csr", "host_uuid", "name", "address", "port"):
        if not body.get(key):
            raise BadRequest(f"'{key}' is required")
    parts = str(body["token"]).split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise Unauthorized("malformed join token")
    host_id, name, address = str(body["host_uuid"]), str(body["name"]), str(body["address"])
    with core.db.write() as w:
        row = core.db.one("SELECT * FROM join_tokens WHERE token_hash = ?", [_hash(parts[1])])
        if row is None or row["used_at"] or row["expires_at"] < now():
            events.record(core.db, "host.join", "host", host_id, "denied", "bad, used or expired token",
                          None, remote_addr)
            raise Unauthorized("join token is unknown, used or expired; ask an admin for a new one")
        existing = core.db.one("SELECT * FROM hosts WHERE id = ? OR name = ?", [host_id, name])
        if existing and (existing["id"] != host_id or existing["name"] != name):
            raise Conflict(f"another host already uses the name {name!r} or UUID {host_id}")
        try:
            cert = core.ca.sign_csr(str(body["csr"]).encode(), HOST_CN_PREFIX + host_id, [address])
        except ValueError as exc:
            raise BadRequest(str(exc)) from exc
        fp = fingerprint(cert)
        w.execute("UPDATE join_tokens SET used_at = ?, host_id = ? WHERE id = ?", [now(), host_id, row["id"]])
        if existing:
            w.execute("UPDATE hosts SET address = ?, agent_port = ?, cert_fingerprint = ? WHERE id = ?",
                      [address, int(body["port"]), fp, host_id])
        else:
            w.execute(
                "INSERT INTO hosts (id, name, address, agent_port, state, cert_fingerprint, joined_at)"
                " VALUES (?, ?, ?, ?, 'down', ?, ?)", [host_id, name, address, int(body["port"]), fp, now()])
        events.record(core.db, "host.join", "host", host_id, "ok", f"name={name} address={address}", None,
                      remote_addr)
    return {"host_id": host_id, "certificate": (cert_pem(cert) + core.ca.pem).decode(),
            "ca": core.ca.pem.decode(), "agent_url": core.config.agent_url}


def host_for_cert(core: Core, cert_pem_text: str | None) -> dict[str, Any]:
    """Return the host whose certificate was presented on the agent channel."""
    if not cert_pem_text:
        raise Unauthorized("a host certificate is required")
    host = core.db.one("SELECT * FROM hosts WHERE cert_fingerprint = ?", [fingerprint(cert_pem_text)])
    if host is None:
        raise Unauthorized("this certificate belongs to no enrolled host")
    return host


def heartbeat(core: Core, host: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Store a host's facts and the states of its domains."""
    facts = body.get("facts") or {}
    domains = body.get("domains") or []
    gib = 1024**3
    with core.db.write() as w:
        state = host["state"] if host["state"] == "maintenance" else "up"
        if host["state"] == "down":
            events.record(core.db, "host.up", "host", host["id"], "ok", f"{host['name']} is back")
        w.execute(
            "UPDATE hosts SET state = ?, last_seen = ?, vcpus = ?, memory_mib = ?, disk_free_gib = ?,"
            " disk_total_gib = ?, facts = ? WHERE id = ?",
            [state, now(), int(facts.get("vcpus", 0)), int(facts.get("memory_mib", 0)),
             float(facts.get("pool_free_bytes", 0)) / gib, float(facts.get("pool_capacity_bytes", 0)) / gib,
             json.dumps(facts), host["id"]],
        )
        stale = []
        for dom in domains:
            owner = core.db.one("SELECT host_id FROM vms WHERE id = ?", [dom.get("uuid")])
            # A copy of a VM inventoried elsewhere, with no task moving it right now: evacuated while
            # this host was down. (During a migration both hosts briefly hold the domain.)
            if (owner and owner["host_id"] not in (None, host["id"]) and (dom.get("labcloud") or {}).get("vm_id")
                    and not core.tasks.active_for_vm(dom["uuid"])):
                stale.append(dom["uuid"])
        sync.reconcile(core, host, domains)
    if stale and host["state"] == "down":
        log.warning("host %s came back with %d stale VM copies; removing them", host["name"], len(stale))
    if stale:
        _remove_stale_in_background(core, host, stale, force=host["state"] == "down")
    return {"ok": True, "interval_s": 3}


_reconciling: set[str] = set()


def _remove_stale_in_background(core: Core, host: dict[str, Any], stale: list[str], force: bool) -> None:
    """Remove stale copies off the request thread, one run per host at a time."""
    import threading

    from controller.ops.hosts import remove_stale_copies

    if host["id"] in _reconciling:
        return
    _reconciling.add(host["id"])

    def run() -> None:
        try:
            remove_stale_copies(core, host, stale, force)
        finally:
            _reconciling.discard(host["id"])

    threading.Thread(target=run, name=f"stale-{host['name']}", daemon=True).start()


def mark_silent_hosts_down(core: Core) -> int:
    """Mark hosts down whose last heartbeat is older than the limit; return how many."""
    limit = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=core.config.host_down_after_s)
    cutoff = limit.isoformat(timespec="seconds")
    with core.db.write() as w:
        silent = core.db.all("SELECT id, name FROM hosts WHERE state != 'down' AND (last_seen IS NULL OR last_seen < ?)"
                             " AND last_seen IS NOT NULL", [cutoff])
        for host in silent:
            w.execute("UPDATE hosts SET state = 'down' WHERE id = ?", [host["id"]])
            # Nobody knows what runs there now: unknown until its heartbeat reconciles them.
            cur = w.execute("UPDATE vms SET state = 'unknown' WHERE host_id = ?"
                            " AND state NOT IN ('building', 'deleting')", [host["id"]])
            events.record(core.db, "host.down", "host", host["id"], "ok",
                          f"{host['name']} silent for more than {core.config.host_down_after_s:.0f} s;"
                          f" {cur.rowcount} VM(s) on it are unknown until it reports again")
            log.warning("host %s marked down: no heartbeat", host["name"])
    return len(silent)
