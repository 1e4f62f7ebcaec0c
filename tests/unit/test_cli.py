"""The labcloud-controller command's admin chores."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller import cli


def test_create_user_twice_says_so_without_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LABCLOUD_DATA_DIR", str(tmp_path / "new-data-dir"))  # does not exist yet
    monkeypatch.setattr(cli.getpass, "getpass", lambda _prompt: "a-good-password")
    assert cli.main(["create-user", "alice"]) == 0
    assert cli.main(["create-user", "alice"]) == 1
    err = capsys.readouterr().err
    assert "exists already" in err and "Traceback" not in err


def test_create_token_for_unknown_user_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCLOUD_DATA_DIR", str(tmp_path))
    assert cli.main(["create-token", "nobody"]) == 2
