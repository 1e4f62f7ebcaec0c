"""The domain XML API: show, replace, validation by libvirt, history, revert, audit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from controller.core import Core
from tests.conftest import Inventory
from tests.unit.xmlhost import XmlHost


@pytest.fixture
def xhost(core: Core, inv: Inventory, tmp_path: Path) -> Iterator[XmlHost]:
    """A host whose agent runs on libvirt's test driver."""
    h = XmlHost(core, inv, tmp_path)
    yield h
    h.close()


def url(vm: dict[str, Any], suffix: str = "") -> str:
    return f"/api/v1/vms/{vm['name']}/xml{suffix}"


def xml_error(resp: Any, code: str) -> dict[str, Any]:
    """Check a 422 XML error document and return its 'error' object."""
    assert resp.status_code == 422, resp.get_data(as_text=True)
    err = resp.get_json()["error"]
    assert set(err) == {"code", "message", "line", "element", "request_id"}, err
    assert err["code"] == code, err
    return dict(err)


def put(client: FlaskClient, vm: dict[str, Any], headers: dict[str, str], xml: str, **extra: Any) -> Any:
    return client.put(url(vm), json={"xml": xml, **extra}, headers=headers)


def history(client: FlaskClient, vm: dict[str, Any], headers: dict[str, str]) -> list[dict[str, Any]]:
    resp = client.get(url(vm, "/history"), headers=headers)
    assert resp.status_code == 200, resp.get_json()
    return list(resp.get_json()["history"])


def events(core: Core, action: str) -> list[dict[str, Any]]:
    return core.db.all("SELECT * FROM events WHERE action = ? ORDER BY id", [action])


def test_get_returns_libvirts_inactive_secure_xml_and_version_1(client: FlaskClient, auth: dict[str, str],
                                                                 xhost: XmlHost) -> None:
    vm = xhost.vm("web1", 1)
    resp = client.get(url(vm), headers=auth)
    assert resp.status_code == 200
    doc = resp.get_json()
    assert doc == {"xml": xhost.libvirt_xml(vm["id"]), "version": 1}
    assert "passwd=" in doc["xml"]  # the secure definition
    entry, = history(client, vm, auth)
    assert entry["version"] == 1 and entry["source"] == "create" and entry["diff"] == ""


def test_admin_edit_updates_libvirt_inventory_and_history(client: FlaskClient, core: Core, auth: dict[str, str],
                                                          xhost: XmlHost) -> None:
    vm = xhost.vm("web1", 1)
    old = client.get(url(vm), headers=auth).get_json()["xml"]
    new = old.replace("<vcpu placement='static'>1</vcpu>", "<vcpu placement='static'>2</vcpu>").replace(
        "</uuid>", "</uuid>\n  <description>build box</description>")
    assert new != old
    resp = put(client, vm, auth, new)
    assert resp.status_code == 200, resp.get_json()
    doc = resp.get_json()
    assert doc["version"] == 2 and doc["changed"] is True and doc["restarted"] is False
    assert doc["next_boot"] is False  # it was not running
    assert "+  <description>build box</description>" in doc["diff"] and "-  <vcpu" in doc["diff"]
    assert doc["vm"]["vcpus"] == 2
    assert "<description>build box</description>" in xhost.libvirt_xml(vm["id"])
    newest, first = history(client, vm, auth)
    assert (newest["version"], newest["author"], newest["source"]) == (2, "admin", "edit")
    assert newest["created_at"].endswith("+00:00") and newest["diff"] == doc["diff"]
    assert first["version"] == 1
    assert events(core, "vm.xml.edit")[-1]["result"] == "ok"


def test_running_vm_change_applies_at_next_boot_unless_restarted(client: FlaskClient, auth: dict[str, str],
                                                                 xhost: XmlHost) -> None:
    vm = xhost.vm("web1", 1, running=True)
    old = client.get(url(vm), headers=auth).get_json()["xml"]
    first = put(client, vm, auth, old.replace("</uuid>", "</uuid>\n  <title>one</title>")).get_json()
    assert (first["changed"], first["next_boot"], first["restarted"]) == (True, True, False)
    second = put(client, vm, auth, xhost.libvirt_xml(vm["id"]).replace("<title>one</title>", "<title>two</title>"),
                 restart=True).get_json()
    assert (second["changed"], second["next_boot"], second["restarted"]) == (True, False, True)
    assert second["vm"]["state"] == "running"


def test_dry_run_shows_the_diff_and_changes_nothing(client: FlaskClient, auth: dict[str, str],
                                                    xhost: XmlHost) -> None:
    vm = xhost.vm("web1", 1)
    old = client.get(url(vm), headers=auth).get_json()["xml"]
    resp = put(client, vm, auth, old.replace("</uuid>", "</uuid>\n  <title>t</title>"), dry_run=True)
    doc = resp.get_json()
    assert resp.status_code == 200 and doc["changed"] is True and doc["version"] == 1
    assert "+  <title>t</title>" in doc["diff"]
    assert xhost.libvirt_xml(vm["id"]) == old
    assert len(history(client, vm, auth)) == 1
    same = put(client, vm, auth, old, dry_run=True).get_json()
    assert same["changed"] is False and same["diff"] == ""


@pytest.mark.parametrize(("case", "code", "words"), [
    ("malformed", "invalid_xml", "malformed XML"),
    ("uuid", "xml_policy", "<uuid> cannot change"),
    ("name", "xml_policy", "<name> cannot change"),
    ("libvirt", "libvirt_rejected", "libvirt rejected the XML"),
    ("doctype", "invalid_xml", "DOCTYPE"),
])
def test_bad_xml_is_refused_and_changes_nothing(client: FlaskClient, core: Core, auth: dict[str, str],
                                                xhost: XmlHost, case: str, code: str, words: str) -> None:
    vm = xhost.vm("web1", 1)
    old = client.get(url(vm), headers=auth).get_json()["xml"]
    bad = {
        "malformed": old.replace("</devices>", "</device>"),
        "uuid": old.replace(vm["id"], "6f1c1a52-0d9e-4b5e-9b7a-2f0e3c4d5a61"),
        "name": old.replace("<name>web1</name>", "<name>web2</name>"),
        "libvirt": old.replace("<on_crash>destroy</on_crash>", "<on_crash>explode</on_crash>"),
        "doctype": '<!DOCTYPE domain [<!ENTITY x "y">]>\n' + old,
    }[case]
    before = history(client, vm, auth)
    err = xml_error(put(client, vm, auth, bad), code)
    assert words in err["message"], err
    assert xhost.libvirt_xml(vm["id"]) == old
    assert history(client, vm, auth) == before
    assert events(core, "vm.xml.edit")[-1]["result"] == "refused"
    if case == "malformed":
        assert err["line"] == old.count("\n", 0, old.index("</devices>")) + 1
    if case in ("uuid", "name"):
        assert err["element"] == case


def test_libvirts_own_message_comes_back(client: FlaskClient, auth: dict[str, str], xhost: XmlHost) -> None:
    vm = xhost.vm("web1", 1)
    old = client.get(url(vm), headers=auth).get_json()["xml"]
    err = xml_error(put(client, vm, auth, old.replace("<on_crash>destroy</on_crash>",
                                                          "<on_crash>explode</on_crash>")), "libvirt_rejected")
    assert "failed to validate against schema" in err["message"], err["message"]
    assert err["element"] == "on_crash" and err["line"] == old.count("\n", 0, old.index("<on_crash>")) + 1


def test_removing_the_tracked_nic_is_an_inventory_conflict(client: FlaskClient, auth: dict[str, str],
                                                           xhost: XmlHost) -> None:
    vm = xhost.vm("web1", 1)
    old = client.get(url(vm), headers=auth).get_json()["xml"]
    start, end = old.index("<interface"), old.index("</interface>") + len("</interface>")
    err = xml_error(put(client, vm, auth, old[:start] + old[end:]), "inventory_conflict")
    assert "MAC" in err["message"] and "10.0.0." in err["message"]
    mac = xhost.core.db.one("SELECT mac FROM vm_nics WHERE vm_id = ?", [vm["id"]]) or {}
    changed_mac = old.replace(mac["mac"], "52:54:00:00:00:99")
    assert "allocated" in xml_error(put(client, vm, auth, changed_mac), "inventory_conflict")["message"]
    other_bridge = old.replace("bridge='br0'", "bridge='br9'")
    assert "br0" in xml_error(put(client, vm, auth, other_bridge), "inventory_conflict")["message"]
    no_root = old.replace(f"{vm['id']}-root.qcow2", "other.qcow2")
    assert "root disk" in xml_error(put(client, vm, auth, no_root), "inventory_conflict")["message"]
    assert xhost.libvirt_xml(vm["id"]) == old


def test_revert_restores_an_earlier_version(client: FlaskClient, auth: dict[str, str], xhost: XmlHost) -> None:
    vm = xhost.vm("web1", 1)
    original = client.get(url(vm), headers=auth).get_json()["xml"]
    assert put(client, vm, auth, original.replace("</uuid>", "</uuid>\n  <title>x</title>")).status_code == 200
    resp = client.post(url(vm, "/revert"), json={"version": 1}, headers=auth)
    assert resp.status_code == 200, resp.get_json()
    doc = resp.get_json()
    assert doc["version"] == 3 and doc["changed"] is True and "-  <title>x</title>" in doc["diff"]
    assert xhost.libvirt_xml(vm["id"]) == original
    assert [(h["version"], h["source"]) for h in history(client, vm, auth)] == [(3, "revert"), (2, "edit"),
                                                                                (1, "create")]
    one = client.get(url(vm, "/history/1"), headers=auth).get_json()
    assert one["xml"] == original and one["version"] == 1 and one["author"]
    assert client.get(url(vm, "/history/9"), headers=auth).status_code == 404
    assert client.post(url(vm, "/revert"), json={"version": "1"}, headers=auth).status_code == 400


def test_members_do_not_see_other_members_xml(client: FlaskClient, xhost: XmlHost, member: dict[str, Any],
                                              other_member: dict[str, Any]) -> None:
    vm = xhost.vm("web1", member["id"])
    assert client.get(url(vm), headers=member["headers"]).status_code == 200
    for method, suffix in (("GET", ""), ("PUT", ""), ("GET", "/history"), ("GET", "/history/1"),
                           ("POST", "/revert")):
        resp = client.open(url(vm, suffix), method=method, json={"xml": "<domain/>", "version": 1},
                           headers=other_member["headers"])
        assert resp.status_code == 404, (method, suffix)
    assert client.get(url(vm)).status_code == 401


def test_host_side_changes_show_as_a_host_version(client: FlaskClient, auth: dict[str, str],
                                                  xhost: XmlHost) -> None:
    vm = xhost.vm("web1", 1)
    original = client.get(url(vm), headers=auth).get_json()["xml"]
    xhost.hv.conn.defineXML(original.replace("</uuid>", "</uuid>\n  <title>by virsh</title>"))
    assert client.get(url(vm), headers=auth).get_json()["version"] == 2
    newest = history(client, vm, auth)[0]
    assert newest["source"] == "host" and newest["author"] is None and "by virsh" in newest["diff"]
