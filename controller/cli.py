"""`labcloud-controller`: serve, and small admin chores."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from controller import auth, backup, reqid
from controller.backup import BackupError
from controller.config import Config
from controller.db import Database
from controller.errors import ApiError


def main(argv: list[str] | None = None) -> int:
    """Run a labcloud-controller command."""
    parser = argparse.ArgumentParser(prog="labcloud-controller", description="labcloud's control plane")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve", help="run the API, UI, agent channel and periodic jobs (settings: LABCLOUD_* env)")
    user = sub.add_parser("create-user", help="add a user (asks for the password)")
    user.add_argument("username")
    user.add_argument("--role", choices=["admin", "member"], default="member")
    token = sub.add_parser("create-token", help="print a new API token for a user")
    token.add_argument("username")
    token.add_argument("--name", default="cli")
    back = sub.add_parser("backup", help="copy the inventory to FILE with SQLite's online backup (safe while serving)")
    back.add_argument("file", type=Path)
    rest = sub.add_parser("restore", help="replace the inventory with a backup FILE (the controller must be stopped)")
    rest.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    config = Config.from_env()
    reqid.setup_logging(name="controller")
    if args.cmd == "serve":
        from controller.server import serve

        try:
            serve(config)
        except BackupError as exc:
            print(f"labcloud-controller: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.cmd in ("backup", "restore"):
        return _backup_or_restore(args.cmd, args.file, config)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(config.db_path)
    db.migrate()
    if args.cmd == "create-user":
        password = getpass.getpass(f"password for {args.username}: ")
        try:
            auth.create_user(db, args.username, password, args.role)
        except ApiError as exc:
            print(f"labcloud-controller: {exc.message}", file=sys.stderr)
            return 1
        print(f"created {args.role} {args.username}")
    elif args.cmd == "create-token":
        row = db.one("SELECT id FROM users WHERE username = ?", [args.username])
        if row is None:
            print(f"no user {args.username!r}", file=sys.stderr)
            return 2
        print(auth.issue_token(db, row["id"], args.name))
    return 0


def _backup_or_restore(cmd: str, file: Path, config: Config) -> int:
    try:
        if cmd == "backup":
            out = backup.backup(config.db_path, file)
            print(f"backed up the inventory (schema version {out['schema_version']}, {out['hosts']} hosts,"
                  f" {out['vms']} VMs, {out['tasks']} tasks, {out['bytes']} bytes) to {out['file']}")
        else:
            out = backup.restore(file, config.db_path)
            kept = f"; the previous inventory is kept as {out['kept']}" if out["kept"] else ""
            print(f"restored {file} (schema version {out['schema_version']}, {out['hosts']} hosts, {out['vms']} VMs)"
                  f" to {out['file']}{kept}; start the controller now")
    except (BackupError, OSError) as exc:
        print(f"labcloud-controller: {cmd} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
