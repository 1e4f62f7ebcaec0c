"""Authentication and authorisation of the API: tokens, sessions, CSRF, roles, throttling."""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from controller.app import create_app
from controller.auth import LoginThrottle
from controller.config import Config
from controller.core import Core
from controller.errors import ApiError
from tests.conftest import ADMIN_PASSWORD, MEMBER_PASSWORD, Inventory, assert_error

# The only endpoints reachable without a user (spec §5): log in, enrol a host, fetch the CA.
PUBLIC = {("POST", "/api/v1/tokens"), ("POST", "/api/v1/hosts/join"), ("GET", "/api/v1/pki/ca.pem")}
HTTPS = "https://localhost"


def api_routes(app: Flask) -> list[tuple[str, str]]:
    """Return (method, concrete URL) for every method of every non-public rule under /api/v1."""
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        methods = set(rule.methods or ()) - {"HEAD", "OPTIONS"}
        if any((m, rule.rule) in PUBLIC for m in methods):
            continue  # with its automatic HEAD and OPTIONS
        url = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", "x", rule.rule)
        out.extend((method, url) for method in sorted(rule.methods or ()))
    return out


def test_create_app_can_be_called_twice(tmp_path: Path) -> None:
    """The app factory builds independent apps (one per test, as Flask's tutorial does)."""
    cores = []
    try:
        for name in ("one", "two"):
            config = Config(data_dir=tmp_path / name, admin_password=ADMIN_PASSWORD)
            cores.append(Core.start(config))
            app = create_app(config, cores[-1])
            assert app.test_client().get("/api/v1/vms").status_code == 401
    finally:
        for c in cores:
            c.close()
            c.db.close()


def test_route_list_covers_the_api(app: Flask) -> None:
    routes = api_routes(app)
    assert ("GET", "/api/v1/vms") in routes
    assert ("DELETE", "/api/v1/vms/x") in routes
    assert ("POST", "/api/v1/hosts/join-tokens") in routes
    assert not any(url == "/api/v1/tokens" and m == "POST" for m, url in routes)


@pytest.mark.parametrize("header", [None, "Bearer lct_not-a-real-token", "Bearer ", "Basic YWRtaW46YWRtaW4="])
def test_every_private_endpoint_answers_401(app: Flask, client: FlaskClient, inv: Inventory,
                                            header: str | None) -> None:
    before = inv.counts()
    headers = {"Authorization": header} if header is not None else {}
    for method, url in api_routes(app):
        resp = client.open(url, method=method, headers=headers, json={} if method in ("POST", "PUT", "PATCH") else None)
        if method == "HEAD":
            assert resp.status_code == 401, (method, url)
            continue
        err = assert_error(resp, 401, "unauthorized")
        assert ("token" in err["message"]) or ("log in" in err["message"]), (method, url, err)
    # The refused calls changed nothing (a refused call is not even audited as an action).
    assert inv.counts() == before


def test_public_endpoints_need_no_token(client: FlaskClient) -> None:
    resp = client.get("/api/v1/pki/ca.pem")
    assert resp.status_code == 200
    assert resp.data.startswith(b"-----BEGIN CERTIFICATE-----")
    # Bad input to the public POSTs is a 400, not a 401: they are reachable without a user.
    assert_error(client.post("/api/v1/tokens", json={}), 400)
    assert_error(client.post("/api/v1/hosts/join", json={}), 400)


def test_valid_token_is_accepted(client: FlaskClient, auth: dict[str, str]) -> None:
    resp = client.get("/api/v1/vms", headers=auth)
    assert resp.status_code == 200
    assert resp.get_json() == {"vms": []}
    assert client.get("/api/v1/whoami", headers=auth).get_json() == {"username": "admin", "role": "admin"}


def test_a_token_revokes_itself_and_only_itself(client: FlaskClient, auth: dict[str, str], inv: Inventory) -> None:
    other = client.post("/api/v1/tokens", json={"username": "admin", "password": ADMIN_PASSWORD}).get_json()["token"]
    tokens = inv.count("api_tokens")
    resp = client.delete("/api/v1/tokens/current", headers=auth)
    assert resp.status_code == 200 and resp.get_json() == {"revoked": True}
    assert inv.count("api_tokens") == tokens - 1
    assert_error(client.get("/api/v1/whoami", headers=auth), 401)
    assert_error(client.delete("/api/v1/tokens/current", headers=auth), 401)
    assert client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {other}"}).status_code == 200


def test_token_with_wrong_password_is_refused(client: FlaskClient, inv: Inventory) -> None:
    tokens = inv.count("api_tokens")
    err = assert_error(client.post("/api/v1/tokens", json={"username": "admin", "password": "wrong-pass"}), 401)
    assert "wrong username or password" in err["message"]
    assert_error(client.post("/api/v1/tokens", json={"username": "nobody", "password": "wrong-pass"}), 401)
    assert inv.count("api_tokens") == tokens


def test_passwords_and_tokens_are_stored_hashed(core: Core, config: Any, admin_token: str,
                                                member: dict[str, Any]) -> None:
    for row in core.db.all("SELECT username, password_hash FROM users"):
        assert row["password_hash"].startswith("scrypt:"), row
    hashes = {r["token_hash"] for r in core.db.all("SELECT token_hash FROM api_tokens")}
    for token in (admin_token, member["token"]):
        assert hashlib.sha256(token.encode()).hexdigest() in hashes
    core.db.db.execute("PRAGMA wal_checkpoint(FULL)")
    secrets = [admin_token.encode(), member["token"].encode(), ADMIN_PASSWORD.encode(), MEMBER_PASSWORD.encode()]
    files = [p for p in config.data_dir.rglob("*") if p.is_file()]
    assert any(p.name == "inventory.db" for p in files)
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret not in data, f"{secret!r} is stored in clear in {path}"


def test_login_is_throttled_after_five_failures(client: FlaskClient) -> None:
    for _ in range(5):
        assert_error(client.post("/api/v1/tokens", json={"username": "admin", "password": "wrong-pass"}), 401)
    # Even the right password is refused while the lockout lasts.
    err = assert_error(client.post("/api/v1/tokens", json={"username": "admin", "password": ADMIN_PASSWORD}), 429,
                       "too_many_attempts")
    assert "wait" in err["message"]


def test_ui_login_is_throttled_too(client: FlaskClient) -> None:
    token = csrf_from(client.get("/login", base_url=HTTPS))
    form = {"username": "admin", "password": "wrong-pass", "csrf_token": token}
    referer = {"Referer": HTTPS + "/login"}
    for _ in range(5):
        assert client.post("/login", data=form, base_url=HTTPS, headers=referer).status_code == 401
    form["password"] = ADMIN_PASSWORD
    resp = client.post("/login", data=form, base_url=HTTPS, headers=referer)
    assert resp.status_code == 429
    assert client.get("/api/v1/vms", base_url=HTTPS).status_code == 401  # no session was started


def test_throttle_forgets_failures_after_the_lockout() -> None:
    throttle = LoginThrottle(max_failures=2, lockout_s=0.05)
    throttle.failed("user:a")
    throttle.failed("user:a")
    with pytest.raises(ApiError, match="too many failed logins"):
        throttle.check("user:a")
    throttle.check("user:b")  # other keys are unaffected
    time.sleep(0.06)
    throttle.check("user:a")


ADMIN_ONLY = [
    ("POST", "/api/v1/hosts/join-tokens", None),
    ("PATCH", "/api/v1/hosts/h1", {"ram_ratio": 2.0}),
    ("POST", "/api/v1/flavors", {"name": "huge", "vcpus": 4, "memory_mib": 4096, "disk_gib": 40}),
    ("POST", "/api/v1/networks", {"name": "net2", "bridge": "br1", "cidr": "10.9.0.0/24",
                                  "range": ["10.9.0.10", "10.9.0.20"]}),
    ("POST", "/api/v1/images", {"name": "img", "path": "/etc/hostname", "format": "raw"}),
    ("GET", "/api/v1/events", None),
]


@pytest.mark.parametrize(("method", "url", "body"), ADMIN_ONLY, ids=[f"{m} {u}" for m, u, _ in ADMIN_ONLY])
def test_member_is_refused_admin_endpoints(client: FlaskClient, inv: Inventory, member: dict[str, Any],
                                           method: str, url: str, body: Any) -> None:
    inv.host("h1")
    before = inv.counts()
    err = assert_error(client.open(url, method=method, json=body, headers=member["headers"]), 403, "forbidden")
    assert "admin" in err["message"]
    assert inv.counts() == before
    assert inv.db.one("SELECT ram_ratio FROM hosts WHERE name = 'h1'") == {"ram_ratio": 1.0}


def test_members_see_only_their_own_vms_and_tasks(client: FlaskClient, core: Core, inv: Inventory,
                                                  auth: dict[str, str], member: dict[str, Any],
                                                  other_member: dict[str, Any]) -> None:
    host = inv.host("h1")
    inv.vm("alice-vm", member["id"], host)
    inv.vm("bob-vm", other_member["id"], host)
    task_id = core.tasks.create("vm.start", other_member["id"])
    assert [v["name"] for v in client.get("/api/v1/vms", headers=member["headers"]).get_json()["vms"]] == ["alice-vm"]
    assert [v["name"] for v in client.get("/api/v1/vms", headers=auth).get_json()["vms"]] == ["alice-vm", "bob-vm"]
    assert client.get("/api/v1/tasks", headers=member["headers"]).get_json() == {"tasks": []}
    assert_error(client.get(f"/api/v1/tasks/{task_id}", headers=member["headers"]), 404)
    assert client.get(f"/api/v1/tasks/{task_id}", headers=other_member["headers"]).status_code == 200
    assert client.get(f"/api/v1/tasks/{task_id}", headers=auth).status_code == 200


# --- the UI session and CSRF ----------------------------------------------------------------------


def csrf_from(resp: Any) -> str:
    """Return the CSRF token of the first form on a page."""
    assert resp.status_code == 200, resp.status_code
    found = re.search(r'name="csrf_token" value="([^"]+)"', resp.get_data(as_text=True))
    assert found, "no csrf_token on the page"
    return found.group(1)


def ui_login(client: FlaskClient, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
    """Log in through the form; return the CSRF token of the page shown after login."""
    token = csrf_from(client.get("/login", base_url=HTTPS))
    resp = client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                       base_url=HTTPS, headers={"Referer": HTTPS + "/login"})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return csrf_from(client.get("/", base_url=HTTPS))


def test_login_form_without_csrf_token_is_refused(client: FlaskClient) -> None:
    client.get("/login", base_url=HTTPS)
    resp = client.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD}, base_url=HTTPS,
                       headers={"Referer": HTTPS + "/login"})
    assert resp.status_code == 400
    assert resp.mimetype == "text/html"  # a browser gets a page, not a JSON document
    assert "CSRF token is missing; reload the page and try again" in resp.get_data(as_text=True)
    assert client.get("/api/v1/vms", base_url=HTTPS).status_code == 401  # no session was started


def test_csrf_refusal_carries_the_requests_own_id(client: FlaskClient) -> None:
    """The error of a refused form post names this request's id, not the previous request's."""
    first = client.get("/login", base_url=HTTPS, headers={"X-Request-Id": "req-first-request"})
    assert first.headers["X-Request-Id"] == "req-first-request"
    resp = client.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD}, base_url=HTTPS,
                       headers={"Referer": HTTPS + "/login", "X-Request-Id": "req-second-request"})
    assert resp.status_code == 400
    assert resp.headers["X-Request-Id"] == "req-second-request"


def test_session_api_call_needs_the_csrf_header(client: FlaskClient, inv: Inventory) -> None:
    token = ui_login(client)
    assert client.get("/api/v1/vms", base_url=HTTPS).status_code == 200  # reads need no CSRF token
    flavor = {"name": "tiny", "vcpus": 1, "memory_mib": 256, "disk_gib": 1}
    before = inv.counts()
    err = assert_error(client.post("/api/v1/flavors", json=flavor, base_url=HTTPS,
                                   headers={"Referer": HTTPS + "/"}), 400, "csrf")
    assert "reload the page" in err["message"]
    assert_error(client.post("/api/v1/flavors", json=flavor, base_url=HTTPS,
                             headers={"Referer": HTTPS + "/", "X-CSRFToken": "forged"}), 400, "csrf")
    assert inv.counts() == before
    resp = client.post("/api/v1/flavors", json=flavor, base_url=HTTPS,
                       headers={"Referer": HTTPS + "/", "X-CSRFToken": token})
    assert resp.status_code == 201, resp.get_json()
    assert inv.count("flavors") == before["flavors"] + 1


def test_bearer_calls_need_no_csrf_token_even_with_a_session(client: FlaskClient, auth: dict[str, str]) -> None:
    ui_login(client)
    resp = client.post("/api/v1/flavors", json={"name": "tiny", "vcpus": 1, "memory_mib": 256, "disk_gib": 1},
                       base_url=HTTPS, headers=auth)
    assert resp.status_code == 201


def test_member_session_is_a_member(client: FlaskClient, member: dict[str, Any]) -> None:
    token = ui_login(client, member["username"], MEMBER_PASSWORD)
    assert client.get("/api/v1/whoami", base_url=HTTPS).get_json() == {"username": "alice", "role": "member"}
    assert_error(client.post("/api/v1/hosts/join-tokens", base_url=HTTPS,
                             headers={"Referer": HTTPS + "/", "X-CSRFToken": token}), 403)
