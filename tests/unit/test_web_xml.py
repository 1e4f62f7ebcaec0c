"""The web UI's domain XML page: the editor shows libvirt's XML, its assets are served, others get 404."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from controller.core import Core
from tests.conftest import MEMBER_PASSWORD, Inventory
from tests.unit.test_web_pages import log_in
from tests.unit.xmlhost import XmlHost


@pytest.fixture
def xhost(core: Core, inv: Inventory, tmp_path: Path) -> Iterator[XmlHost]:
    """A host whose agent runs on libvirt's test driver."""
    h = XmlHost(core, inv, tmp_path)
    yield h
    h.close()


def test_xml_page_shows_libvirts_xml_in_the_editor(client: FlaskClient, xhost: XmlHost,
                                                   member: dict[str, Any]) -> None:
    vm = xhost.vm("web1", member["id"], running=True)
    web = log_in(client, member["username"], MEMBER_PASSWORD)
    detail = web.get("/vms/web1").get_data(as_text=True)
    assert 'href="/vms/web1/xml"' in detail
    resp = web.get("/vms/web1/xml")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert 'id="xml-text"' in html and f"&lt;uuid&gt;{vm['id']}&lt;/uuid&gt;" in html
    assert "node_modules/codemirror/lib/codemirror.js" in html and "js/xmledit.js" in html
    assert "member policy" in html and 'id="xml-restart"' in html and 'id="tab-history"' in html
    assert "<script>" not in html  # the CSP allows no inline script


def test_xml_page_of_another_users_vm_is_404(app: Any, xhost: XmlHost, member: dict[str, Any],
                                             other_member: dict[str, Any]) -> None:
    xhost.vm("web1", member["id"])
    web = log_in(app.test_client(), other_member["username"], MEMBER_PASSWORD)
    assert web.get("/vms/web1/xml").status_code == 404


def test_xml_page_says_when_the_host_cannot_be_reached(client: FlaskClient, inv: Inventory) -> None:
    host = inv.host("h9")
    inv.vm("lost1", 1, host)
    html = log_in(client).get("/vms/lost1/xml").get_data(as_text=True)
    assert "Could not read the XML from the VM's host" in html and "h9" in html


def test_editor_script_is_served(client: FlaskClient) -> None:
    resp = client.get("/static/js/xmledit.js")
    assert resp.status_code == 200 and b"fromTextArea" in resp.data
    resp.close()
