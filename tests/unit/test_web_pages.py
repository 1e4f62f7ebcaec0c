"""The web UI's pages: login, rendering, titles, labels, no inline script or style, admin-only pages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from controller.core import Core
from tests.conftest import ADMIN_PASSWORD, MEMBER_PASSWORD, Inventory

HTTPS = "https://localhost"
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"


@dataclass
class Web:
    """A logged-in browser stand-in: HTTPS, a Referer (Flask-WTF checks it) and the page's CSRF token."""

    client: FlaskClient
    token: str

    def get(self, path: str) -> Any:
        """GET a page."""
        return self.client.get(path, base_url=HTTPS)

    def post(self, path: str, data: dict[str, Any] | None = None, csrf: bool = True) -> Any:
        """POST a form, with the CSRF token unless csrf is False."""
        form = dict(data or {})
        if csrf:
            form["csrf_token"] = self.token
        return self.client.post(path, data=form, base_url=HTTPS, headers={"Referer": HTTPS + "/"})


def csrf_token(resp: Any) -> str:
    """Return the CSRF token a page carries."""
    found = re.search(r'name="csrf-token" content="([^"]+)"', resp.get_data(as_text=True))
    assert found, "no CSRF token on the page"
    return found.group(1)


def log_in(client: FlaskClient, username: str = "admin", password: str = ADMIN_PASSWORD) -> Web:
    """Log in through the form and return a Web helper."""
    token = csrf_token(client.get("/login", base_url=HTTPS))
    resp = client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                       base_url=HTTPS, headers={"Referer": HTTPS + "/login"})
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return Web(client, csrf_token(client.get("/", base_url=HTTPS)))


def title(resp: Any) -> str:
    """Return a page's <title>."""
    found = re.search(r"<title>(.*?)</title>", resp.get_data(as_text=True), re.S)
    assert found, "no title"
    return found.group(1).strip()


@pytest.fixture
def world(core: Core, inv: Inventory, member: dict[str, Any], other_member: dict[str, Any]) -> dict[str, Any]:
    """Hosts, catalog and VMs of the admin (id 1), alice and bob."""
    h1 = inv.host("h1")
    inv.host("h2", state="maintenance")
    inv.image("debian12")
    inv.flavor("small")
    lan = inv.network("lan")
    vms = {"web1": inv.vm("web1", 1, h1, network=lan, ip="10.0.0.40"),
           "alice-vm": inv.vm("alice-vm", member["id"], h1, network=lan, ip="10.0.0.60"),
           "bob-vm": inv.vm("bob-vm", other_member["id"], h1, network=lan, ip="10.0.0.70")}
    return {"h1": h1, "lan": lan, "vms": vms, "alice": member, "bob": other_member}


@pytest.fixture
def admin_web(client: FlaskClient, world: dict[str, Any]) -> Web:
    """The admin, logged in to the UI."""
    return log_in(client)


@pytest.fixture
def alice_web(app: Any, world: dict[str, Any]) -> Web:
    """The member alice, logged in to the UI (her own client)."""
    return log_in(app.test_client(), "alice", MEMBER_PASSWORD)


PAGES = [("/", "Dashboard"), ("/vms", "VMs"), ("/vms/web1", "VM web1"), ("/vms/new", "Create VM"),
         ("/vms/web1/destroy", "Destroy web1?"), ("/vms/web1/console", "Console of web1"), ("/hosts", "Hosts"),
         ("/hosts/h1", "Host h1"), ("/images", "Images"), ("/networks", "Networks"), ("/networks/lan", "Network lan"),
         ("/tasks", "Tasks"), ("/events", "Events"), ("/users", "Users")]


def test_pages_need_a_session(client: FlaskClient) -> None:
    resp = client.get("/vms?state=running", base_url=HTTPS)
    assert resp.status_code == 302
    assert resp.headers["Location"] == "/login?next=/vms?state%3Drunning"


def test_login_goes_back_to_a_local_page_only(client: FlaskClient) -> None:
    for target, expected in (("/vms", "/vms"), ("https://evil.example/", "/"), ("//evil.example", "/"),
                             ("/\\evil.example", "/")):
        c = client.application.test_client()
        token = csrf_token(c.get("/login", base_url=HTTPS))
        resp = c.post("/login", data={"username": "admin", "password": ADMIN_PASSWORD, "csrf_token": token,
                                      "next": target}, base_url=HTTPS, headers={"Referer": HTTPS + "/login"})
        assert resp.headers["Location"] == expected, target


def test_wrong_password_says_what_to_do(client: FlaskClient) -> None:
    token = csrf_token(client.get("/login", base_url=HTTPS))
    resp = client.post("/login", data={"username": "admin", "password": "nope-nope", "csrf_token": token},
                       base_url=HTTPS, headers={"Referer": HTTPS + "/login"})
    assert resp.status_code == 401
    assert "Wrong username or password. Check both and try again." in resp.get_data(as_text=True)


def test_health_and_favicon_need_no_session(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"ok": True}
    resp = client.get("/favicon.ico")
    assert resp.status_code == 301 and resp.headers["Location"].endswith("/static/favicon.svg")


@pytest.mark.parametrize(("path", "heading"), PAGES)
def test_every_page_renders_with_a_title_naming_it(admin_web: Web, path: str, heading: str) -> None:
    resp = admin_web.get(path)
    assert resp.status_code == 200, resp.get_data(as_text=True)[:2000]
    assert title(resp) == f"{heading} · labcloud"
    html = resp.get_data(as_text=True)
    assert re.search(rf"<h1[^>]*>\s*{re.escape(heading)}", html)
    assert 'rel="icon"' in html
    assert "Content-Security-Policy" in resp.headers


class FormControls(HTMLParser):
    """Collects form controls and the ids that labels point at."""

    def __init__(self) -> None:
        super().__init__()
        self.labelled: set[str] = set()
        self.controls: list[dict[str, str | None]] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "label" and a.get("for"):
            self.labelled.add(str(a["for"]))
        if tag in ("input", "select", "textarea") and a.get("type") not in ("hidden", "submit"):
            self.controls.append(a)
        if tag == "script" and not a.get("src"):
            self.inline.append("inline <script>")
        if tag == "style":
            self.inline.append("<style>")
        self.inline += [f"{tag} {k}=" for k in a if k == "style" or k.startswith("on")]


@pytest.mark.parametrize(("path", "heading"), PAGES)
def test_every_control_has_a_label_and_nothing_is_inline(admin_web: Web, path: str, heading: str) -> None:
    parser = FormControls()
    parser.feed(admin_web.get(path).get_data(as_text=True))
    unlabelled = [c for c in parser.controls
                  if c.get("id") not in parser.labelled and not c.get("aria-label") and not c.get("aria-labelledby")]
    assert unlabelled == [], unlabelled
    assert parser.inline == []  # CSP: script-src 'self', style-src 'self'


def test_templates_hold_no_inline_script_or_style() -> None:
    for path in TEMPLATES.glob("*.html"):
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
        assert not re.search(r"\sstyle=|<style|\son[a-z]+=", text), path


def test_times_are_machine_readable_for_the_browser(admin_web: Web) -> None:
    html = admin_web.get("/vms").get_data(as_text=True)
    assert re.search(r'<time datetime="\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00">', html)


def test_members_cannot_open_admin_pages(alice_web: Web, core: Core) -> None:
    for path in ("/users", "/events"):
        resp = alice_web.get(path)
        assert resp.status_code == 403
        assert "this page needs the admin role; ask an admin" in resp.get_data(as_text=True)
    before = core.db.one("SELECT COUNT(*) AS n FROM users")
    assert alice_web.post("/users", {"username": "mallory", "password": "x" * 10, "password2": "x" * 10,
                                     "role": "admin"}).status_code == 403
    assert core.db.one("SELECT COUNT(*) AS n FROM users") == before
    html = alice_web.get("/").get_data(as_text=True)
    assert 'href="/users"' not in html and 'href="/events"' not in html


def test_unknown_pages_answer_an_html_404_that_says_what_to_do(admin_web: Web) -> None:
    for path in ("/no-such-page", "/vms/nope", "/hosts/nope", "/networks/nope", "/tasks/nope"):
        resp = admin_web.get(path)
        assert resp.status_code == 404, path
        assert resp.mimetype == "text/html"
        html = resp.get_data(as_text=True)
        assert "Back to the dashboard" in html and "Request id" in html


def test_logout_ends_the_session(admin_web: Web) -> None:
    assert admin_web.post("/logout").status_code == 302
    assert admin_web.get("/vms").status_code == 302


def test_a_form_post_without_csrf_token_is_refused(admin_web: Web, core: Core) -> None:
    tasks = core.db.one("SELECT COUNT(*) AS n FROM tasks")
    resp = admin_web.post("/vms/web1/actions/reboot", csrf=False)
    assert resp.status_code == 400
    assert "CSRF token is missing; reload the page and try again" in resp.get_data(as_text=True)
    assert core.db.one("SELECT COUNT(*) AS n FROM tasks") == tasks
