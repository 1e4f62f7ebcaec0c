"""Open vSwitch in a lab host: a userspace switch (``datapath_type=netdev``) with a trunk to the lab switch.

The kernel here has no 802.1Q devices, but OVS's userspace datapath tags VLANs itself
(SPEC §6). Each lab host gets its own ovsdb and run directory, bind-mounted inside the
host's mount namespace over ``/etc/openvswitch``, ``/run/openvswitch`` and
``/var/log/openvswitch``, so ``ovs-vsctl`` run by the host's libvirtd talks to the host's
own switch. Layout (host N)::

    root ns:  lcsw0  <-  lc-hN-ov (veth)
    lc-hN:    ovsup (veth peer, trunk: every VLAN) -> ovsbr0 (OVS bridge, netdev datapath)

Opt-in (``ensure_ovs``): a lab without VLAN tests does not pay for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from lab import net, procs

if TYPE_CHECKING:
    from lab.hosts import LabHost

OVS_BRIDGE = "ovsbr0"
UPLINK = "ovsup"
OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
DIRS = (("run", "/run/openvswitch"), ("etc", "/etc/openvswitch"), ("log", "/var/log/openvswitch"))
DAEMONS = ("ovsdb-server", "ovs-vswitchd")


def uplink_veth(host: LabHost) -> str:
    """Return the root-namespace end of the host's OVS trunk veth."""
    return f"{host.lab.prefix}-{host.name}-ov"


def ensure_ovs(host: LabHost) -> None:
    """Start the host's own Open vSwitch (if not running) with bridge ovsbr0 trunked to the lab switch."""
    base = host.root / "ovs"
    for sub, target in DIRS:
        (base / sub).mkdir(parents=True, exist_ok=True)
        host.run(["mkdir", "-p", target])
        if host.run(["findmnt", "--noheadings", "--mountpoint", target], check=False).returncode != 0:
            host.run(["mount", "--bind", str(base / sub), target])
    if not all(_daemon_pid(host, d) for d in DAEMONS):
        # ovs-ctl skips modprobe here ("Kernel has no loadable module support") and fails only
        # to raise the open-files limit, which is harmless for a few ports.
        host.run([OVS_CTL, "start", "--system-id=random", "--no-monitor"], timeout=60)
        for daemon in DAEMONS:
            pid = _daemon_pid(host, daemon)
            if pid is None:
                raise procs.LabError(f"{host.name}: {daemon} did not start; see {base / 'log'}")
            host.lab.remember_proc(procs.record(pid, daemon, host.name))
    host.run(["ovs-vsctl", "--may-exist", "add-br", OVS_BRIDGE, "--", "set", "bridge", OVS_BRIDGE,
              "datapath_type=netdev"])
    host.run(["ip", "link", "set", OVS_BRIDGE, "up"])
    veth = uplink_veth(host)
    if not net.link_exists(veth):
        if net.link_exists(UPLINK, host.netns):
            procs.run(["ip", "-n", host.netns, "link", "del", UPLINK])
        procs.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", UPLINK, "netns", host.netns])
    procs.run(["ip", "link", "set", veth, "master", net.switch_name(host.lab.prefix), "up"])
    host.run(["ip", "link", "set", UPLINK, "up"])
    host.run(["ovs-vsctl", "--may-exist", "add-port", OVS_BRIDGE, UPLINK])


def _daemon_pid(host: LabHost, daemon: str) -> int | None:
    pid = procs.read_pidfile(host.root / "ovs" / "run" / f"{daemon}.pid")
    if pid is None or procs.proc_starttime(pid) is None:
        return None
    if procs.ns_inode(Path(f"/proc/{pid}/ns/mnt")) != procs.ns_inode(host.mountns_path):
        return None  # a stale pid file naming some other process
    return pid
