"""`labcloud edit`: the VM's domain XML in $EDITOR, applied when saved, like `virsh edit`."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from labcli.client import Client
from labcli.errors import FAILED, OK, ApiError, CliError, UsageError
from labcli.session import connect
from labcli.verbs import vm_path


def editor_command() -> list[str]:
    """Return the editor to run: $VISUAL, else $EDITOR, else vi (may carry arguments, e.g. 'code -w')."""
    command = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"cannot parse the editor command {command!r}: {exc}") from None
    if not words:
        raise UsageError("$VISUAL/$EDITOR is empty")
    return words


def run_editor(text: str, vm: str) -> str:
    """Open text in the editor on a private temporary file and return what was saved."""
    fd, name = tempfile.mkstemp(prefix=f"labcloud-{vm}-", suffix=".xml")  # mode 0600
    path = Path(name)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        try:
            result = subprocess.run([*editor_command(), name], check=False)
        except OSError as exc:
            raise UsageError(f"cannot run the editor {editor_command()[0]!r}: {exc.strerror}") from None
        if result.returncode != 0:
            raise CliError(f"the editor exited with status {result.returncode}; nothing was changed")
        return path.read_text()
    finally:
        path.unlink(missing_ok=True)


def ask_again() -> bool:
    """Say whether the user wants to fix the XML (never when stdin is not a terminal)."""
    if not sys.stdin.isatty():
        return False
    answer = input("edit again? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def apply(client: Client, vm: str, xml: str, restart: bool) -> int:
    """PUT the new XML and say what happened."""
    answer = client.put(vm_path(vm, "xml"), {"xml": xml, "restart": restart})
    if not answer.get("changed", True):
        print(f"VM {vm}: no changes (libvirt's definition is the same)")
        return OK
    print(f"VM {vm}: domain XML updated (version {answer.get('version')})")
    if answer.get("restarted"):
        print("the VM was restarted to apply it")
    elif answer.get("next_boot"):
        print("the VM is running: the change applies at its next boot "
              "(or now with 'labcloud edit --restart', or shutdown and start)")
    return OK


def edit(args: argparse.Namespace) -> int:
    """Edit the VM's XML; on a refusal show why and offer to edit again."""
    client = connect()
    original = client.get(vm_path(args.vm, "xml"))["xml"]
    text = original
    while True:
        text = run_editor(text, args.vm)
        if text.strip() == original.strip():
            print(f"VM {args.vm}: no changes")
            return OK
        try:
            return apply(client, args.vm, text, args.restart)
        except ApiError as exc:
            if exc.status != 422:
                raise
            print(f"labcloud: the change was refused, nothing was changed: {exc}", file=sys.stderr)
            if not ask_again():
                return FAILED
