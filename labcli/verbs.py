"""The virsh-like verbs: each takes the parsed arguments and returns the exit status."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from labcli import output
from labcli.client import Client
from labcli.errors import FAILED, OK, TaskFailed, UsageError
from labcli.session import connect


def vm_path(ref: str, *rest: str) -> str:
    """Return /vms/{ref}/... with the reference escaped (a name cannot reach another path)."""
    return "/".join(["/vms", quote(ref, safe=""), *rest])


def _listing(args: argparse.Namespace, path: str, key: str, columns: list[output.Column]) -> int:
    data = connect().get(path)
    if args.json:
        output.print_json(data, sys.stdout)
    else:
        sys.stdout.write(output.table(data[key], columns))
    return OK


def list_vms(args: argparse.Namespace) -> int:
    """List the VMs you may see."""
    return _listing(args, "/vms", "vms", output.VM_COLUMNS)


def hosts(args: argparse.Namespace) -> int:
    """List hosts with their state and free capacity."""
    return _listing(args, "/hosts", "hosts", output.HOST_COLUMNS)


def images(args: argparse.Namespace) -> int:
    """List images."""
    return _listing(args, "/images", "images", output.IMAGE_COLUMNS)


def flavors(args: argparse.Namespace) -> int:
    """List flavors."""
    return _listing(args, "/flavors", "flavors", output.FLAVOR_COLUMNS)


def networks(args: argparse.Namespace) -> int:
    """List networks."""
    return _listing(args, "/networks", "networks", output.NETWORK_COLUMNS)


def tasks(args: argparse.Namespace) -> int:
    """List unfinished tasks, or with --all the most recent ones too."""
    data = connect().get("/tasks", limit=1000 if args.all else 100)
    if not args.all:
        data = {"tasks": [t for t in data["tasks"] if t["state"] in ("pending", "running")]}
    if args.json:
        output.print_json(data, sys.stdout)
    else:
        sys.stdout.write(output.table(data["tasks"], output.TASK_COLUMNS))
    return OK


def show(args: argparse.Namespace) -> int:
    """Show one VM."""
    data = connect().get(vm_path(args.vm))
    if args.json:
        output.print_json(data, sys.stdout)
    else:
        sys.stdout.write(output.vm_details(data["vm"]))
    return OK


def follow(client: Client, args: argparse.Namespace, task: dict[str, Any]) -> int:
    """Report a started task; with --wait, show its progress and fail when it fails."""
    if args.wait:
        task = client.wait_task(task["id"], output.Progress(sys.stderr).update)
    if args.json:
        output.print_json({"task": task}, sys.stdout)
    what = f"{task['kind']} of {task.get('vm_name') or '-'}"
    if task["state"] == "failed":
        raise TaskFailed(f"{what} failed: {task.get('error')}", task.get("request_id"))
    if not args.json:
        if task["state"] == "succeeded":
            result = task.get("result") or {}
            facts = ", ".join(f"{k} {output.cell(v)}" for k, v in result.items() if k not in ("vm_id", "image_id"))
            print(f"{what} succeeded" + (f" ({facts})" if facts else ""))
        else:
            print(f"{what} started: task {task['id']} ('labcloud tasks' to follow it)")
    return OK


def create(args: argparse.Namespace) -> int:
    """Create a VM from an image, a flavor and a network."""
    nic: dict[str, Any] = {"network": args.network}
    if args.ip:
        nic["ip"] = args.ip
    body: dict[str, Any] = {"name": args.name, "image": args.image, "flavor": args.flavor, "networks": [nic]}
    for key in ("host", "hostname", "storage"):
        if getattr(args, key):
            body[key] = getattr(args, key)
    if args.ssh_key:
        body["ssh_keys"] = [_read(path).strip() for path in args.ssh_key]
    if args.user_data:
        body["user_data"] = _read(args.user_data)
    if args.password_stdin:
        body["password"] = sys.stdin.readline().rstrip("\n")
        if not body["password"]:
            raise UsageError("--password-stdin read an empty line")
    client = connect()
    return follow(client, args, client.post("/vms", body)["task"])


def action(args: argparse.Namespace) -> int:
    """Start, shut down, power off or reboot a VM."""
    client = connect()
    body = {"timeout": args.timeout} if getattr(args, "timeout", None) else {}
    return follow(client, args, client.post(vm_path(args.vm, args.cmd), body)["task"])


def destroy(args: argparse.Namespace) -> int:
    """Destroy a VM and delete its disks, after confirmation."""
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("destroy deletes the VM and its disks; add --yes when not asking on a terminal")
        answer = input(f"destroy VM {args.vm} and delete its disks? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not destroyed", file=sys.stderr)
            return FAILED
    client = connect()
    return follow(client, args, client.delete(vm_path(args.vm))["task"])


def migrate(args: argparse.Namespace) -> int:
    """Move a VM to another host (live when it runs)."""
    client = connect()
    body = {"host": args.to} if args.to else {}
    return follow(client, args, client.post(vm_path(args.vm, "migrate"), body)["task"])


def dumpxml(args: argparse.Namespace) -> int:
    """Print the VM's libvirt domain XML (inactive, secure)."""
    data = connect().get(vm_path(args.vm, "xml"))
    if args.json:
        output.print_json(data, sys.stdout)
    else:
        xml = data["xml"]
        sys.stdout.write(xml if xml.endswith("\n") else xml + "\n")
    return OK


def console(args: argparse.Namespace) -> int:
    """Open a console session: print the page to open and until when it is valid."""
    data = connect().post(vm_path(args.vm, "console"))
    if args.json:
        output.print_json(data, sys.stdout)
        return OK
    c = data["console"]
    print(c["page"])
    print(f"open it in a browser logged in as you; valid once, until {c['expires_at']}")
    if c.get("password"):
        print(f"VNC password: {c['password']}")
    return OK


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
