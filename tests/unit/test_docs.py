"""Every API endpoint is in docs/api.md; every CLI subcommand and option is in docs/cli.md."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from controller import cli as controller_cli
from hostagent import cli as agent_cli
from labcli import cli as labcloud_cli

DOCS = Path(__file__).resolve().parents[2] / "docs"
IGNORED_METHODS = {"HEAD", "OPTIONS"}  # answered by Flask for every rule


def documented(text: str, phrase: str) -> bool:
    """Say whether a phrase occurs as a whole ('GET /api/v1/vms' is not in 'GET /api/v1/vms/{ref}')."""
    return re.search(re.escape(phrase) + r"(?![\w/{}.-])", text) is not None


def api_endpoints(app: Flask) -> set[str]:
    """Return 'METHOD /api/v1/path/{param}' for every rule of the app under /api/v1."""
    out = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/"):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            out.update(f"{method} {path}" for method in set(rule.methods or ()) - IGNORED_METHODS)
    return out


def test_every_api_endpoint_is_documented(app: Flask) -> None:
    text = (DOCS / "api.md").read_text()
    endpoints = api_endpoints(app)
    assert "GET /api/v1/vms/{ref}" in endpoints  # the rule conversion works
    missing = sorted(e for e in endpoints if not documented(text, e))
    assert not missing, f"add these endpoints to docs/api.md: {missing}"


def test_documented_endpoints_exist(app: Flask) -> None:
    """Each endpoint heading in docs/api.md names an endpoint the app serves."""
    headings = re.findall(r"^#{2,4} ((?:GET|POST|PUT|PATCH|DELETE) /api/v1/\S+)\s*$", (DOCS / "api.md").read_text(),
                          re.MULTILINE)
    assert len(headings) >= 10
    stale = sorted(set(headings) - api_endpoints(app))
    assert not stale, f"docs/api.md documents endpoints the app does not serve: {stale}"


def test_api_docs_explain_errors_and_tasks() -> None:
    text = (DOCS / "api.md").read_text()
    for phrase in ('{"error": {"code"', "request_id", "202", "progress", "pending", "succeeded", "failed",
                   "--cacert", "Authorization: Bearer", "X-CSRFToken", "429"):
        assert phrase in text, phrase


class _Parsed(Exception):
    """Raised instead of parsing, to hand back the parser a CLI's main() built."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__(parser.prog)
        self.parser = parser


def build_parser(main: Callable[[list[str]], Any], monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """Return the parser main() builds, stopping it before it parses or does anything."""
    def capture(self: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> Any:
        raise _Parsed(self)

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", capture)
        try:
            main([])
        except _Parsed as parsed:
            return parsed.parser
    raise AssertionError(f"{main} did not build an argument parser")


def commands(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Return {subcommand: its long options}, with '' for the program's own options."""
    out: dict[str, list[str]] = {"": []}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[name] = [o for a in sub._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
        else:
            out[""] += [o for o in action.option_strings if o.startswith("--") and o != "--help"]
    return out


@pytest.mark.parametrize(("program", "main"), [("labcloud-controller", controller_cli.main),
                                               ("labcloud-agent", agent_cli.main),
                                               ("labcloud", labcloud_cli.main)])
def test_every_cli_subcommand_and_option_is_documented(program: str, main: Callable[[list[str]], Any],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    text = (DOCS / "cli.md").read_text()
    parser = build_parser(main, monkeypatch)
    assert parser.prog == program
    found = commands(parser)
    assert len(found) > 1, f"{program} has no subcommands?"
    missing = []
    for name, options in found.items():
        if name and not re.search(rf"^#+ {re.escape(program)} {re.escape(name)}\s*$", text, re.MULTILINE):
            missing.append(f"section '### {program} {name}'")
        section = _section(text, program, name)
        missing += [f"{program} {name} {o}".replace("  ", " ") for o in options if not documented(section, o)]
    assert not missing, f"add to docs/cli.md: {missing}"


def _section(text: str, program: str, name: str) -> str:
    """Return the part of cli.md about one subcommand (or the program's part for name '')."""
    heading = f"{program} {name}".strip()
    match = re.search(rf"^(#+) {re.escape(heading)}\s*$", text, re.MULTILINE)
    if match is None:
        return ""
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(text, match.end())
    return text[match.end(): end.start() if end else len(text)]
