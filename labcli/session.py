"""Logging in and out: get a token with a password, trust the controller's CA, keep both."""

from __future__ import annotations

import argparse
import getpass
import os
import re
import socket
import sys
import tempfile
from pathlib import Path

from controller import pki
from labcli import config
from labcli.client import Client
from labcli.errors import ApiError, ConnectionFailed, NotLoggedIn, UsageError


def connect() -> Client:
    """Return a client for the stored login (NotLoggedIn without one)."""
    cfg = config.Config.load(config.config_path())
    return Client(cfg.url, cfg.ca_file, cfg.token)


def trusted_ca(url: str, ca_file: str | None, ca_sha256: str | None) -> bytes:
    """Return the CA to trust: the given PEM file, or the controller's CA if it matches the pinned fingerprint."""
    if ca_file:
        try:
            pem = Path(ca_file).read_bytes()
            pki.fingerprint(pem)
        except OSError as exc:
            raise UsageError(f"cannot read --ca-file {ca_file}: {exc.strerror}") from None
        except ValueError:
            raise UsageError(f"--ca-file {ca_file} is not a PEM certificate") from None
        return pem
    pin = re.sub(r"[:\s]", "", ca_sha256 or "").lower()
    if not re.fullmatch(r"[0-9a-f]{64}", pin):
        raise UsageError("--ca-sha256 takes the 64 hex digits 'labcloud-controller serve' prints at start-up")
    try:
        return pki.fetch_pinned_ca(url, pin)
    except pki.PinError as exc:
        raise ConnectionFailed(str(exc)) from None
    except OSError as exc:
        raise ConnectionFailed(f"cannot reach the controller at {url}: {exc}") from None


def login(args: argparse.Namespace) -> int:
    """Create an API token with a password and store the URL, the token and the trusted CA."""
    url = args.url.rstrip("/")
    if not re.fullmatch(r"https://[^/\s]+", url):
        raise UsageError(f"the URL must be the controller's https://HOST[:PORT], not {args.url!r}")
    ca_pem = trusted_ca(url, args.ca_file, args.ca_sha256)
    username = args.user or getpass.getuser()
    password = os.environ.get("LABCLOUD_PASSWORD") or getpass.getpass(f"password for {username} at {url}: ")
    with tempfile.TemporaryDirectory(prefix="labcloud-login-") as tmp:  # the old login stays until this works
        ca_tmp = Path(tmp) / "ca.pem"
        ca_tmp.write_bytes(ca_pem)
        answer = Client(url, str(ca_tmp)).post("/tokens", {"username": username, "password": password,
                                                            "name": f"labcloud-cli@{socket.gethostname()}"})
    path = config.config_path()
    ca_path = config.ca_path_for(path)
    config.write_private(ca_path, ca_pem)
    user = answer["user"]
    config.Config(url=url, token=answer["token"], username=user["username"], role=user["role"],
                  ca_file=str(ca_path)).save(path)
    print(f"logged in to {url} as {user['username']} ({user['role']}); settings in {path}")
    return 0


def logout(_args: argparse.Namespace) -> int:
    """Revoke the stored token on the controller, then forget the URL, token and CA."""
    path = config.config_path()
    if not path.exists():
        print("not logged in", file=sys.stderr)
        return 0
    try:
        cfg = config.Config.load(path)
        Client(cfg.url, cfg.ca_file, cfg.token).delete("/tokens/current")
    except NotLoggedIn:
        pass  # a damaged config: nothing to revoke with it
    except ApiError as exc:
        if exc.status != 401:  # 401: the token was revoked already
            print(f"labcloud: the controller did not revoke the token: {exc}", file=sys.stderr)
    except ConnectionFailed as exc:
        print(f"labcloud: could not revoke the token, it stays valid: {exc}", file=sys.stderr)
    config.remove(path)
    print(f"logged out; removed {path}")
    return 0


def whoami(args: argparse.Namespace) -> int:
    """Print who the stored token belongs to."""
    client = connect()
    me = client.get("/whoami")
    if args.json:
        from labcli.output import print_json

        print_json(me, sys.stdout)
    else:
        print(f"{me['username']} ({me['role']}) at {client.url}")
    return 0
