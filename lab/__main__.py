"""Command line for the lab: python -m lab {up,down,status,exec,image}."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

from lab.image import DEFAULT_CACHE_DIR, ensure_guest_image
from lab.lab import DEFAULT_STATE_DIR, Lab
from lab.procs import LabError


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for `python -m lab`."""
    parser = argparse.ArgumentParser(prog="python -m lab", description="Many libvirt hosts on one machine.")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help="where lab.json and the namespace files live (default %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring up hosts h1..hN")
    up.add_argument("--hosts", type=int, default=2, help="number of hosts (default %(default)s)")
    up.add_argument("--listen", action="store_true", help="libvirtd listens on TCP (for migration)")
    sub.add_parser("down", help="remove everything the lab made")
    sub.add_parser("status", help="print what is up, as JSON")
    ex = sub.add_parser("exec", help="run a command inside a host: exec h1 -- virsh list")
    ex.add_argument("host")
    ex.add_argument("argv", nargs=argparse.REMAINDER)
    img = sub.add_parser("image", help="build (or find cached) the guest image and print its path")
    img.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the lab command line; return the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="lab: %(message)s")
    try:
        if args.command == "up":
            started = time.monotonic()
            hosts = Lab(args.state_dir, listen=args.listen).up(args.hosts)
            for host in hosts:
                print(f"{host.name}\t{host.address}\t{host.netns}\t{host.host_uuid}")
            print(f"lab up in {time.monotonic() - started:.1f} s", file=sys.stderr)
        elif args.command == "down":
            Lab(args.state_dir).down()
        elif args.command == "status":
            print(json.dumps(Lab(args.state_dir).status(), indent=2))
        elif args.command == "exec":
            command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            if not command:
                raise LabError("exec needs a command: python -m lab exec h1 -- virsh list")
            host = Lab(args.state_dir).host(args.host)
            return subprocess.run(host.wrap(command), check=False).returncode
        elif args.command == "image":
            print(ensure_guest_image(args.cache_dir))
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
