"""`labcloud`: argument parsing and dispatch; the verbs live in verbs.py, edit.py and session.py."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from labcli import edit, errors, session, verbs

Verb = Callable[[argparse.Namespace], int]

EPILOG = """exit status: 0 ok, 1 the API refused or a task failed, 2 usage error, 3 not logged in or
not allowed, 4 not found, 5 cannot reach the controller or TLS verification failed.
Settings: $LABCLOUD_CONFIG or $XDG_CONFIG_HOME/labcloud/config.json (~/.config)."""


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of every subcommand; each sets 'func' to its verb."""
    parser = argparse.ArgumentParser(prog="labcloud", description="virsh-like client of a labcloud controller",
                                     epilog=EPILOG)
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def verb(name: str, func: Verb, help_: str, *, json: bool = False, wait: bool = False,
             vm: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        if vm:
            p.add_argument("vm", metavar="VM", help="the VM's name or id")
        if json:
            p.add_argument("--json", action="store_true", help="print the API's JSON")
        if wait:
            p.add_argument("--wait", action="store_true",
                           help="follow the task with a progress bar on stderr; exit 1 if it fails")
        return p

    login = verb("login", session.login, "log in to a controller and store the URL, a token and its CA")
    login.add_argument("url", metavar="URL", help="the controller, e.g. https://10.213.0.1:8470")
    login.add_argument("--user", help="user name (default: your login name)")
    trust = login.add_mutually_exclusive_group(required=True)
    trust.add_argument("--ca-file", metavar="PEM", help="the controller's CA certificate (pki/ca.pem)")
    trust.add_argument("--ca-sha256", metavar="HEX",
                       help="the CA's SHA-256 fingerprint printed by 'labcloud-controller serve'")
    verb("logout", session.logout, "forget the stored URL, token and CA")
    verb("whoami", session.whoami, "show who you are logged in as", json=True)

    verb("list", verbs.list_vms, "list VMs", json=True)
    verb("show", verbs.show, "show a VM's state, host, addresses and disks", json=True, vm=True)
    create = verb("create", verbs.create, "create a VM", json=True, wait=True)
    create.add_argument("name", metavar="NAME", help="the new VM's name")
    create.add_argument("--image", required=True, help="image name or id")
    create.add_argument("--flavor", required=True, help="flavor name or id")
    create.add_argument("--network", required=True, help="network name or id")
    create.add_argument("--ip", help="address on the network (default: the lowest free one)")
    create.add_argument("--host", help="host to place it on (default: the scheduler's choice)")
    create.add_argument("--hostname", help="the guest's hostname (default: NAME)")
    create.add_argument("--storage", choices=["local", "shared"], help="where its disk lives (default local)")
    create.add_argument("--ssh-key", action="append", metavar="FILE", help="public key file to authorise "
                        "(repeatable)")
    create.add_argument("--user-data", metavar="FILE", help="cloud-init user-data file")
    create.add_argument("--password-stdin", action="store_true", help="read the guest user's password from "
                        "the first line of stdin")
    for name, help_ in (("start", "boot a stopped VM"), ("shutdown", "ask the guest to power off (ACPI)"),
                        ("reboot", "ask the guest to reboot"), ("poweroff", "force a VM off at once")):
        p = verb(name, verbs.action, help_, json=True, wait=True, vm=True)
        if name == "shutdown":
            p.add_argument("--timeout", type=int, metavar="SECONDS", help="how long the guest may take "
                           "(default 120)")
    destroy = verb("destroy", verbs.destroy, "destroy a VM and delete its disks", json=True, wait=True, vm=True)
    destroy.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    migrate = verb("migrate", verbs.migrate, "move a VM to another host (live when it runs)", json=True,
                   wait=True, vm=True)
    migrate.add_argument("--to", metavar="HOST", help="destination host (default: the scheduler's choice)")
    edit_ = verb("edit", edit.edit, "edit a VM's domain XML in $VISUAL/$EDITOR and apply it", vm=True)
    edit_.add_argument("--restart", action="store_true", help="restart a running VM so the change applies now")
    verb("dumpxml", verbs.dumpxml, "print a VM's domain XML", json=True, vm=True)
    verb("console", verbs.console, "open a console session and print its page", json=True, vm=True)

    verb("hosts", verbs.hosts, "list hosts", json=True)
    verb("images", verbs.images, "list images", json=True)
    verb("flavors", verbs.flavors, "list flavors", json=True)
    verb("networks", verbs.networks, "list networks", json=True)
    tasks = verb("tasks", verbs.tasks, "list running tasks", json=True)
    tasks.add_argument("--all", action="store_true", help="also finished tasks (the latest 1000)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a labcloud command and return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except errors.CliError as exc:
        print(f"labcloud: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("labcloud: interrupted (a task already started keeps running)", file=sys.stderr)
        return errors.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
