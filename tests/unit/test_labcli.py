"""The `labcloud` CLI against a real controller app served over TLS, and against the XML/console contract."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from controller.core import Core
from controller.pki import CertificateAuthority, fingerprint
from labcli import cli, config, errors
from labcli.output import Progress
from tests.conftest import ADMIN_PASSWORD, MEMBER_PASSWORD, Inventory
from tests.unit.labcli_double import TOKEN, XML, contract_app, serve_tls


class Run:
    """Runs `labcloud ARGS` in-process; returns (exit status, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            rc = cli.main(list(argv))
        except SystemExit as exc:  # argparse's usage errors
            rc = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return rc, out, err


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """run('list', '--json') -> (rc, stdout, stderr)."""
    return Run(capsys)


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's config in a fresh XDG_CONFIG_HOME (where login writes it)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in ("LABCLOUD_CONFIG", "LABCLOUD_PASSWORD", "VISUAL", "EDITOR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "xdg" / "labcloud" / "config.json"


@pytest.fixture
def url(app: Flask, core: Core, tmp_path: Path) -> Iterator[str]:
    """The real controller app over HTTPS with a certificate from its own CA."""
    with serve_tls(app, core.ca, tmp_path / "tls") as base:
        yield base


def login(run: Run, url: str, core: Core, monkeypatch: pytest.MonkeyPatch, user: str = "admin",
          password: str = ADMIN_PASSWORD) -> tuple[int, str, str]:
    """Log in by pinning the controller's CA fingerprint."""
    monkeypatch.setenv("LABCLOUD_PASSWORD", password)
    return run("login", url, "--user", user, "--ca-sha256", fingerprint(core.ca.cert))


@pytest.fixture
def admin(run: Run, url: str, core: Core, config_file: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Logged in as admin; returns the URL."""
    assert login(run, url, core, monkeypatch)[0] == 0
    return url


# --- login, config, TLS ------------------------------------------------------------------------------------------

def test_login_pins_the_ca_and_keeps_the_token_private(run: Run, url: str, core: Core, config_file: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    rc, out, err = login(run, url, core, monkeypatch)
    assert rc == 0, err
    assert "logged in" in out and "admin" in out
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_file.parent.stat().st_mode) == 0o700
    saved = json.loads(config_file.read_text())
    assert saved["url"] == url and saved["token"].startswith("lct_") and saved["username"] == "admin"
    ca_file = Path(saved["ca_file"])
    assert ca_file.read_bytes() == core.ca.pem and stat.S_IMODE(ca_file.stat().st_mode) == 0o600
    rc, out, _ = run("whoami")
    assert (rc, out.strip()) == (0, f"admin (admin) at {url}")


def test_login_with_the_ca_file(run: Run, url: str, core: Core, config_file: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ca.pem").write_bytes(core.ca.pem)
    monkeypatch.setenv("LABCLOUD_PASSWORD", ADMIN_PASSWORD)
    rc, _, err = run("login", url, "--user", "admin", "--ca-file", str(tmp_path / "ca.pem"))
    assert rc == 0, err
    assert json.loads(run("whoami", "--json")[1]) == {"username": "admin", "role": "admin"}


def test_login_against_a_wrong_fingerprint_stores_nothing(run: Run, url: str, config_file: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCLOUD_PASSWORD", ADMIN_PASSWORD)
    rc, _, err = run("login", url, "--user", "admin", "--ca-sha256", "ab" * 32)
    assert rc == errors.CONNECTION
    assert "fingerprint" in err and "Traceback" not in err
    assert not config_file.parent.exists()


def test_login_with_a_wrong_password_exits_3(run: Run, url: str, core: Core, config_file: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    rc, _, err = login(run, url, core, monkeypatch, password="not-the-password")
    assert rc == errors.AUTH
    assert "wrong username or password" in err and "(request req-" in err
    assert not config_file.exists()


def test_a_server_with_another_ca_is_refused(run: Run, admin: str, app: Flask, config_file: Path,
                                             tmp_path: Path) -> None:
    impostor = CertificateAuthority.load_or_create(tmp_path / "impostor")
    with serve_tls(app, impostor, tmp_path / "impostor") as other:
        saved = json.loads(config_file.read_text())
        config_file.write_text(json.dumps({**saved, "url": other}))
        rc, _, err = run("list")
    assert rc == errors.CONNECTION
    assert "TLS verification" in err


def test_login_needs_a_trusted_ca_and_https(run: Run, config_file: Path) -> None:
    assert run("login", "https://127.0.0.1:1")[0] == errors.USAGE  # neither --ca-file nor --ca-sha256
    assert run("login", "http://127.0.0.1:1", "--ca-sha256", "ab" * 32)[0] == errors.USAGE
    assert run("login", "https://127.0.0.1:1", "--ca-sha256", "abc")[0] == errors.USAGE


def test_not_logged_in_exits_3(run: Run, config_file: Path) -> None:
    rc, _, err = run("list")
    assert rc == errors.AUTH and "labcloud login" in err
    config_file.parent.mkdir(parents=True)
    config_file.write_text("{not json")
    assert run("hosts")[0] == errors.AUTH


def test_an_unreachable_controller_exits_5(run: Run, admin: str, config_file: Path) -> None:
    saved = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**saved, "url": "https://127.0.0.1:1"}))
    rc, _, err = run("list")
    assert rc == errors.CONNECTION and "cannot reach" in err


def test_logout_revokes_the_token_and_forgets_the_login(run: Run, admin: str, config_file: Path,
                                                       client: FlaskClient) -> None:
    ca_file = config.ca_path_for(config_file)
    token = json.loads(config_file.read_text())["token"]
    assert ca_file.exists()
    assert run("logout")[0] == 0
    assert not config_file.exists() and not ca_file.exists()
    assert client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert run("list")[0] == errors.AUTH
    assert run("logout")[0] == 0  # twice is fine


def test_logout_without_the_controller_still_forgets(run: Run, admin: str, config_file: Path) -> None:
    saved = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**saved, "url": "https://127.0.0.1:1"}))
    rc, _, err = run("logout")
    assert rc == 0 and "stays valid" in err and not config_file.exists()


# --- read verbs: tables and --json -------------------------------------------------------------------------------

@pytest.fixture
def catalog(inv: Inventory, member: dict[str, Any]) -> dict[str, Any]:
    """A host, image, flavor, network and two VMs (one the member's)."""
    h1 = inv.host("h1")
    lan = inv.network("lan")
    inv.image("debian")
    inv.flavor("small")
    return {"h1": h1, "lan": lan, "web1": inv.vm("web1", 1, h1, network=lan, ip="10.0.0.40"),
            "alice-vm": inv.vm("alice-vm", member["id"], h1, network=lan, state="shutoff")}


def test_list_prints_a_table_and_json(run: Run, admin: str, catalog: dict[str, Any]) -> None:
    rc, out, _ = run("list")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "HOST", "VCPUS", "MEMORY_MIB", "IPS", "OWNER"]
    assert lines[2].split()[:6] == ["web1", "running", "h1", "1", "512", "10.0.0.40"]
    rc, out, _ = run("list", "--json")
    assert [v["name"] for v in json.loads(out)["vms"]] == ["alice-vm", "web1"]


@pytest.mark.parametrize(("verb", "key", "header", "first"), [
    ("hosts", "hosts", "NAME", "h1"), ("images", "images", "NAME", "debian"),
    ("flavors", "flavors", "NAME", "small"), ("networks", "networks", "NAME", "lan"),
])
def test_catalog_listings(run: Run, admin: str, catalog: dict[str, Any], verb: str, key: str, header: str,
                          first: str) -> None:
    rc, out, _ = run(verb)
    assert rc == 0
    assert out.split()[0] == header and first in out.splitlines()[1].split()
    rc, out, _ = run(verb, "--json")
    assert rc == 0 and [r["name"] for r in json.loads(out)[key]] == [first]


def test_show_prints_details_and_not_found_exits_4(run: Run, admin: str, catalog: dict[str, Any]) -> None:
    rc, out, _ = run("show", "web1")
    assert rc == 0
    assert "state:" in out and "running" in out and "nic0:" in out and "10.0.0.40" in out
    assert json.loads(run("show", "web1", "--json")[1])["vm"]["id"] == catalog["web1"]["id"]
    rc, _, err = run("show", "nope")
    assert rc == errors.NOT_FOUND and "(request req-" in err
    assert run("show", "../hosts")[0] == errors.NOT_FOUND  # a name cannot reach another endpoint


def test_a_member_sees_only_own_vms(run: Run, url: str, core: Core, config_file: Path, catalog: dict[str, Any],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    assert login(run, url, core, monkeypatch, user="alice", password=MEMBER_PASSWORD)[0] == 0
    assert [v["name"] for v in json.loads(run("list", "--json")[1])["vms"]] == ["alice-vm"]
    assert run("show", "web1")[0] == errors.NOT_FOUND


# --- task verbs and --wait ---------------------------------------------------------------------------------------

def test_create_without_wait_prints_the_task(run: Run, admin: str, catalog: dict[str, Any]) -> None:
    rc, out, _ = run("create", "new1", "--image", "debian", "--flavor", "small", "--network", "lan", "--json")
    task = json.loads(out)["task"]
    assert task["kind"] == "vm.create" and task["vm_name"] == "new1"
    assert rc == (errors.FAILED if task["state"] == "failed" else 0)  # it fails at once without an agent


def test_create_wait_follows_the_task_and_a_failure_exits_1(run: Run, admin: str, catalog: dict[str, Any],
                                                            tmp_path: Path) -> None:
    (tmp_path / "key.pub").write_text("ssh-ed25519 AAAAC3Nza test@host\n")
    (tmp_path / "user-data").write_text("#cloud-config\n")
    rc, out, err = run("create", "new2", "--image", "debian", "--flavor", "small", "--network", "lan",
                       "--ip", "10.0.0.77", "--host", "h1", "--ssh-key", str(tmp_path / "key.pub"),
                       "--user-data", str(tmp_path / "user-data"), "--wait")
    # The host's agent is unreachable in unit tests, so the task fails; the CLI says so and why.
    assert rc == errors.FAILED, (out, err)
    assert "vm.create [" in err and "%" in err  # the text progress bar (stderr is not a terminal)
    assert "vm.create of new2 failed:" in err and "(request req-" in err
    assert run("show", "new2")[0] == errors.NOT_FOUND  # a failed create removes the VM


def test_lifecycle_verbs_start_tasks(run: Run, admin: str, catalog: dict[str, Any], wait: Any) -> None:
    _, out, _ = run("start", "alice-vm", "--json")  # exits 1 if the task has failed already (no agent)
    task = json.loads(out)["task"]
    assert task["kind"] == "vm.start"
    wait(task["id"])
    rc, _, err = run("start", "alice-vm", "--wait")
    assert rc == errors.FAILED and "vm.start of alice-vm failed: host h1: agent unreachable" in err
    for verb in ("shutdown", "reboot", "poweroff", "migrate"):
        rc, _, err = run(verb, "nope")
        assert rc == errors.NOT_FOUND, (verb, err)


def test_destroy_asks_unless_yes(run: Run, admin: str, catalog: dict[str, Any],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    rc, _, err = run("destroy", "web1")  # stdin is not a terminal here
    assert rc == errors.USAGE and "--yes" in err
    monkeypatch.setattr(sys, "stdin", FakeTty("n\n"))
    assert run("destroy", "web1")[0] == errors.FAILED
    assert run("show", "web1")[0] == 0
    rc, out, _ = run("destroy", "web1", "--yes", "--json")  # the task may have failed already (no agent)
    assert json.loads(out)["task"]["kind"] == "vm.destroy"


def test_tasks_lists_running_ones_and_all(run: Run, admin: str, catalog: dict[str, Any], core: Core) -> None:
    run("create", "new3", "--image", "debian", "--flavor", "small", "--network", "lan", "--wait")
    rc, out, _ = run("tasks", "--all")
    assert rc == 0 and "vm.create" in out and "failed" in out
    assert json.loads(run("tasks", "--json")[1]) == {"tasks": []}  # nothing is running any more


def test_progress_redraws_one_line_on_a_terminal() -> None:
    out = FakeTty("")
    progress = Progress(out)
    task = {"kind": "vm.create", "state": "running", "progress": 40, "message": "copying"}
    progress.update(task)
    progress.update(task)  # unchanged: not drawn again
    progress.update({**task, "state": "succeeded", "progress": 100, "message": "done"})
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and "100% done" in text


# --- edit, dumpxml, console against the API contract -------------------------------------------------------------

class FakeTty:
    """A terminal stand-in for stdin or stderr: answers isatty() with True."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines(True)
        self.written: list[str] = []

    def isatty(self) -> bool:
        return True

    def readline(self) -> str:
        return self.lines.pop(0) if self.lines else ""

    def write(self, text: str) -> int:
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def getvalue(self) -> str:
        return "".join(self.written)


@pytest.fixture
def double(tmp_path: Path, config_file: Path) -> Iterator[dict[str, Any]]:
    """The XML/console contract served over TLS, with a stored login for it; yields the double's state."""
    ca = CertificateAuthority.load_or_create(tmp_path / "double-ca")
    app, state = contract_app(ca.pem)
    with serve_tls(app, ca, tmp_path / "double-tls") as base:
        (tmp_path / "double-ca.pem").write_bytes(ca.pem)
        config.Config(url=base, token=TOKEN, username="admin", role="admin",
                      ca_file=str(tmp_path / "double-ca.pem")).save(config_file)
        yield state


def editor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *edits: str) -> Path:
    """Set EDITOR to a script that applies the next of `edits` (python expressions on `text`) per run."""
    script = tmp_path / "editor.py"
    script.write_text(
        "import sys, pathlib\n"
        f"edits = {list(edits)!r}\n"
        "count = pathlib.Path(sys.argv[0] + '.count')\n"
        "n = int(count.read_text()) if count.exists() else 0\n"
        "count.write_text(str(n + 1))\n"
        "path = pathlib.Path(sys.argv[1])\n"
        "text = path.read_text()\n"
        "path.write_text(eval(edits[min(n, len(edits) - 1)]))\n"
    )
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    return script


MORE_MEMORY = "text.replace('524288', '1048576')"
BROKEN = "text.replace('</domain>', '<oops></domain>')"


def test_edit_applies_the_change(run: Run, double: dict[str, Any], tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    editor(tmp_path, monkeypatch, MORE_MEMORY)
    rc, out, err = run("edit", "vm1")
    assert rc == 0, err
    assert "version 2" in out and "next boot" in out
    assert double["xml"].count("1048576") == 2
    assert double["puts"] == [{"xml": XML.replace("524288", "1048576"), "restart": False}]
    rc, out, _ = run("dumpxml", "vm1")
    assert rc == 0 and "<memory unit='KiB'>1048576</memory>" in out


def test_edit_with_restart_asks_for_it(run: Run, double: dict[str, Any], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    editor(tmp_path, monkeypatch, MORE_MEMORY)
    rc, out, _ = run("edit", "vm1", "--restart")
    assert rc == 0 and "restarted" in out and double["puts"][0]["restart"] is True


def test_edit_without_changes_sends_nothing(run: Run, double: dict[str, Any], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    editor(tmp_path, monkeypatch, "text")
    rc, out, _ = run("edit", "vm1")
    assert (rc, out.strip()) == (0, "VM vm1: no changes") and double["puts"] == []


def test_an_invalid_edit_without_a_terminal_fails_and_changes_nothing(run: Run, double: dict[str, Any],
                                                                      tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    editor(tmp_path, monkeypatch, BROKEN)
    rc, _, err = run("edit", "vm1")
    assert rc == errors.FAILED
    assert "line 10:" in err and "malformed" in err and "nothing was changed" in err
    assert "edit again" not in err
    assert double["xml"] == XML and double["version"] == 1


def test_an_invalid_edit_on_a_terminal_can_be_edited_again(run: Run, double: dict[str, Any], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    script = editor(tmp_path, monkeypatch, BROKEN, "text.replace('<oops>', '').replace('524288', '262144')")
    monkeypatch.setattr(sys, "stdin", FakeTty("y\n"))
    rc, out, err = run("edit", "vm1")
    assert rc == 0, err
    assert "malformed" in err and "edit again? [y/N]" in out
    assert Path(str(script) + ".count").read_text() == "2"  # the editor opened twice
    assert "262144" in double["xml"] and "<oops>" not in double["xml"]


def test_an_invalid_edit_declined_on_a_terminal_exits_1(run: Run, double: dict[str, Any], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    editor(tmp_path, monkeypatch, "text.replace('<name>vm1</name>', '<name>vm2</name>')")
    monkeypatch.setattr(sys, "stdin", FakeTty("\n"))
    rc, _, err = run("edit", "vm1")
    assert rc == errors.FAILED and "element <name>" in err and double["version"] == 1


def test_a_failing_editor_changes_nothing(run: Run, double: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDITOR", "false")
    rc, _, err = run("edit", "vm1")
    assert rc == errors.FAILED and "editor exited" in err and double["puts"] == []
    monkeypatch.setenv("EDITOR", "/nonexistent/editor")
    assert run("edit", "vm1")[0] == errors.USAGE


def test_dumpxml_and_edit_of_an_unknown_vm_exit_4(run: Run, double: dict[str, Any]) -> None:
    assert run("dumpxml", "vm9")[0] == errors.NOT_FOUND
    assert run("edit", "vm9")[0] == errors.NOT_FOUND
    rc, out, _ = run("dumpxml", "vm1", "--json")
    assert rc == 0 and json.loads(out) == {"xml": XML, "version": 1}


def test_console_prints_the_page_and_expiry(run: Run, double: dict[str, Any]) -> None:
    rc, out, _ = run("console", "vm1")
    assert rc == 0
    assert out.splitlines()[0] == "https://127.0.0.1:8470/vms/vm1-id/console"
    assert "2026-11-21T22:10:02+00:00" in out
    assert json.loads(run("console", "vm1", "--json")[1])["console"]["url"].startswith("wss://")
    double["running"] = False
    rc, _, err = run("console", "vm1")
    assert rc == errors.FAILED and "not running" in err


def test_a_refused_token_exits_3(run: Run, double: dict[str, Any], config_file: Path) -> None:
    saved = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**saved, "token": "lct_wrong"}))
    assert run("dumpxml", "vm1")[0] == errors.AUTH


def test_wait_shows_progress_until_the_task_succeeds(run: Run, double: dict[str, Any]) -> None:
    rc, out, err = run("migrate", "vm1", "--to", "h2", "--wait")
    assert rc == 0, err
    assert out.strip() == "vm.migrate of vm1 succeeded (from h1, to h2)"
    assert [line.split("]")[1].split()[0] for line in err.splitlines()] == ["40%", "80%", "100%"]
