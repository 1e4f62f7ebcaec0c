"""In a real browser: the domain XML editor, against an agent on libvirt's test driver.

The controller process is the shared one of conftest.py; this module adds a host whose agent
really answers: the agent app (hostagent.app) on libvirt's ``test:///default`` driver, served
over mutual TLS in this process with a certificate from the controller's CA, as a joined host's.
"""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from cheroot import wsgi
from playwright.sync_api import expect

from controller.pki import CertificateAuthority
from controller.tls import tls_adapter
from hostagent.app import Agent, create_agent_app
from hostagent.config import AgentConfig
from hostagent.domainxml import DomainSpec, NicSpec, build_domain
from hostagent.hypervisor import Hypervisor
from tests.browser.conftest import Controller, login, ready, shot

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def xml_vm(controller: Controller, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A VM 'xml1' of the admin on host 'hx', whose agent serves test:///default over mutual TLS."""
    directory = tmp_path_factory.mktemp("agent")
    pki = controller.data_dir / "pki"
    ca = CertificateAuthority.load_or_create(pki)
    ca.ensure_pair(directory, "host", "hx", ["127.0.0.1"], server=True, client=True)
    shutil.copy(pki / "ca.pem", directory / "ca.pem")
    port = _free_port()
    config = AgentConfig(controller_url=controller.url, agent_channel_url=controller.url, host_id="", name="hx",
                         address="127.0.0.1", port=port, virt_type="qemu", libvirt_uri="test:///default",
                         config_dir=str(directory))
    hv = Hypervisor("test:///default")
    server = wsgi.Server(("127.0.0.1", port), create_agent_app(Agent(config, hv)), numthreads=4,
                         server_name="labcloud-agent")
    server.ssl_adapter = tls_adapter(str(directory / "host.pem"), str(directory / "host.key"),
                                     client_ca=str(directory / "ca.pem"))
    server.prepare()
    thread = threading.Thread(target=server.serve, name="xml-agent", daemon=True)
    thread.start()
    host = controller.inv.host("hx", agent_port=port)
    vm = controller.inv.vm("xml1", 1, host, network=controller.ids["lan"])
    flavor = controller.db.one("SELECT id FROM flavors WHERE name = 'large'") or {}
    with controller.db.write() as w:
        w.execute("UPDATE vms SET flavor_id = ? WHERE id = ?", [flavor["id"], vm["id"]])
    mac = (controller.db.one("SELECT mac FROM vm_nics WHERE vm_id = ?", [vm["id"]]) or {})["mac"]
    dom = hv.conn.defineXMLFlags(build_domain(DomainSpec(
        uuid=vm["id"], name="xml1", vcpus=1, memory_mib=512,
        root_disk=f"/var/lib/libvirt/images/labcloud/{vm['id']}-root.qcow2", seed_disk=None,
        nics=[NicSpec(mac=mac, bridge="br0")], virt_type="qemu", vm_id=vm["id"], owner="admin",
        vnc_password="Pw4vnc",
    )), libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    try:
        yield {"vm": vm, "dom": dom}
    finally:
        dom.undefine()
        with controller.db.write() as w:
            w.execute("DELETE FROM vms WHERE id = ?", [vm["id"]])
            w.execute("DELETE FROM hosts WHERE id = ?", [host["id"]])
        server.stop()
        thread.join(timeout=10)
        hv.close()


def set_xml(page: Any, text: str) -> None:
    page.evaluate("(t) => document.querySelector('.CodeMirror').CodeMirror.setValue(t)", text)


def get_xml(page: Any) -> str:
    return str(page.evaluate("() => document.querySelector('.CodeMirror').CodeMirror.getValue()"))


def test_edit_preview_error_at_line_apply_history_revert(page: Any, xml_vm: dict[str, Any], tmp_path: Path) -> None:
    login(page)
    page.goto("/vms/xml1")
    ready(page)
    page.get_by_role("link", name="Edit XML").click()
    page.wait_for_selector("#xml-app[data-ready='1'][data-editor='codemirror']")
    expect(page.locator(".CodeMirror-linenumber").first).to_be_visible()  # line numbers
    assert page.locator(".CodeMirror .cm-tag").count() > 10  # syntax highlighting
    original = get_xml(page)
    assert "<name>xml1</name>" in original

    # A malformed document: the error is shown at its line, in the message and in the editor.
    lines = original.split("\n")
    bad_line = next(i for i, line in enumerate(lines) if "<on_crash>" in line) + 1
    lines[bad_line - 1] = lines[bad_line - 1].replace("</on_crash>", "</on_crash")
    set_xml(page, "\n".join(lines))
    page.get_by_role("button", name="Preview changes").click()
    error = page.locator("#xml-error")
    expect(error).to_be_visible()
    assert error.get_attribute("data-line") in (str(bad_line), str(bad_line + 1)), error.text_content()
    expect(error).to_contain_text("Line")
    expect(page.locator(".CodeMirror .xml-error-line")).to_have_count(1)

    # A valid change: the diff first, then apply.
    set_xml(page, original.replace("</uuid>", "</uuid>\n  <title>from the browser</title>"))
    page.get_by_role("button", name="Preview changes").click()
    expect(page.locator("#xml-error")).to_be_hidden()
    expect(page.locator("#xml-diff")).to_contain_text("+  <title>from the browser</title>")
    expect(page.locator("#xml-diff .add")).to_have_count(1)
    shot(page, "xml-editor-diff")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#xml-result")).to_contain_text("saved as version 2")
    assert "<title>from the browser</title>" in xml_vm["dom"].XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)

    # The history lists both versions; reverting to 1 makes version 3 with the original XML.
    page.get_by_role("tab", name="History").click()
    rows = page.locator("#xml-history tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("admin")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revert to 1").click()
    expect(page.locator("#xml-result")).to_contain_text("saved as version 3")
    expect(rows).to_have_count(3)
    assert "<title>" not in xml_vm["dom"].XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    shot(page, "xml-editor-history")
    # The one 422 is the malformed preview's answer, which Chromium logs; nothing else (no CSP violation).
    unexpected = [e for e in page.console_log.errors if "status of 422" not in e]
    assert not unexpected, unexpected
