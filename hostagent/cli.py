"""`labcloud-agent`: join a controller, then serve."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from controller import reqid
from hostagent.config import DEFAULT_PATH, AgentConfig


def main(argv: list[str] | None = None) -> int:
    """Run a labcloud-agent command."""
    parser = argparse.ArgumentParser(prog="labcloud-agent", description="labcloud's per-host agent")
    parser.add_argument("--config", type=Path, default=DEFAULT_PATH, help=f"settings file (default {DEFAULT_PATH})")
    sub = parser.add_subparsers(dest="cmd", required=True)
    join = sub.add_parser("join", help="enrol this host with a controller using a one-time token")
    join.add_argument("url", help="the controller's URL, e.g. https://controller:8470")
    join.add_argument("token", help="a token from POST /api/v1/hosts/join-tokens")
    join.add_argument("--name", default=socket.gethostname(), help="host name in labcloud (default: hostname)")
    join.add_argument("--address", help="address the controller reaches this agent on (default: route to it)")
    join.add_argument("--port", type=int, default=8472, help="agent port (default 8472)")
    join.add_argument("--pool-path", default="/var/lib/libvirt/images/labcloud", help="storage pool directory")
    join.add_argument("--virt-type", choices=["kvm", "qemu"], default="kvm",
                      help="domain type: kvm on real hosts, qemu (TCG) where KVM cannot run guests")
    join.add_argument("--libvirt-pki-dir", help="where to put the host certificate for libvirtd's TLS listener and "
                      "QEMU's migration TLS (point libvirtd.conf's cert_file/key_file/ca_file there)")
    join.add_argument("--shared-pool-path", help="a directory every host mounts at this path (e.g. NFS) for "
                      "VMs on shared storage")
    join.add_argument("--shared-pool-unsafe", action="store_true",
                      help="the shared directory is one libvirt cannot recognise as shared (lab only)")
    join.add_argument("--switch", choices=["linux", "ovs"], default="linux",
                      help="switch backend for VLAN networks: linux (802.1Q devices and bridges, default) or ovs "
                      "(Open vSwitch port tags)")
    sub.add_parser("serve", help="run the agent (verbs over mutual TLS, heartbeat)")
    args = parser.parse_args(argv)
    reqid.setup_logging(name="agent")
    if args.cmd == "join":
        from hostagent.join import JoinError
        from hostagent.join import join as do_join

        try:
            cfg = do_join(args.url, args.token, args.config, name=args.name, address=args.address, port=args.port,
                          pool_path=args.pool_path, virt_type=args.virt_type, libvirt_pki_dir=args.libvirt_pki_dir,
                          shared_pool_path=args.shared_pool_path, shared_pool_unsafe=args.shared_pool_unsafe,
                          switch=args.switch)
        except JoinError as exc:
            print(f"labcloud-agent: {exc}", file=sys.stderr)
            return 1
        print(f"joined as host {cfg.name} ({cfg.host_id}); settings in {args.config}; "
              "start it with 'labcloud-agent serve'")
        return 0
    from hostagent.server import serve

    config = AgentConfig.load(args.config)
    config.fault_create_pause_s = float(os.environ.get("LABCLOUD_AGENT_FAULT_CREATE_PAUSE_S", "0") or 0)
    serve(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
