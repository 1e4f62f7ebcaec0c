"""The lab's network: a switch bridge in the root namespace and one network namespace per host.

Layout (prefix "lc", host N)::

    root ns:  lcsw0 (bridge, 10.213.0.1/24)  <-  lc-hN-sw (veth)
    lc-hN:    eth0 (veth peer) -> br0 (bridge, 10.213.0.(10+N)/24), default via 10.213.0.1
    root ns:  lcsw1 (bridge, no address)     <-  lc-hN-s1 (veth)
    lc-hN:    eth1 (veth peer) -> br1 (bridge, no address)

Guests of host N are bridged onto its br0, so every guest and host shares one L2 segment;
br1 is a second segment (through the second switch lcsw1) for guests with a second NIC.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from lab.procs import LabError, run

NETNS_DIR = Path("/run/netns")


def switch_name(prefix: str) -> str:
    """Return the name of the lab switch bridge in the root namespace."""
    return f"{prefix}sw0"


def second_switch_name(prefix: str) -> str:
    """Return the name of the second lab switch (an L2 segment without addresses in the root namespace)."""
    return f"{prefix}sw1"


def second_veth_name(prefix: str, host: str) -> str:
    """Return the root-namespace end of a host's veth pair to the second switch."""
    return f"{prefix}-{host}-s1"


def netns_name(prefix: str, host: str) -> str:
    """Return the network namespace name of a lab host."""
    return f"{prefix}-{host}"


def veth_name(prefix: str, host: str) -> str:
    """Return the name of the switch-side (root namespace) end of a host's veth pair."""
    return f"{prefix}-{host}-sw"


def link_exists(name: str, netns: str | None = None) -> bool:
    """Return True if a network link exists (in the root namespace or in netns)."""
    argv = ["ip"] + (["-n", netns] if netns else []) + ["link", "show", "dev", name]
    return run(argv, check=False).returncode == 0


def _addresses(name: str, netns: str | None = None) -> list[str]:
    argv = ["ip", "-j"] + (["-n", netns] if netns else []) + ["addr", "show", "dev", name]
    data = json.loads(run(argv).stdout or "[]")
    return [f"{a['local']}/{a['prefixlen']}" for link in data for a in link.get("addr_info", [])]


def ensure_switch(prefix: str, cidr: str, address: str) -> None:
    """Create the lab switch bridge with the gateway address, refusing a network already in use."""
    name = switch_name(prefix)
    want = f"{address}/{ipaddress.ip_network(cidr).prefixlen}"
    if not link_exists(name):
        routes = json.loads(run(["ip", "-j", "route", "show", "to", "match", address]).stdout or "[]")
        for route in routes:
            if route.get("dst") != "default":
                raise LabError(
                    f"{cidr} is already routed via {route.get('dev')} on this machine; "
                    "remove that network or choose another lab CIDR"
                )
        run(["ip", "link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
    if want not in _addresses(name):
        run(["ip", "addr", "add", want, "dev", name])
    run(["ip", "link", "set", name, "up"])
    second = second_switch_name(prefix)
    if not link_exists(second):
        run(["ip", "link", "add", second, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
    run(["ip", "link", "set", second, "up"])


def ensure_host_network(prefix: str, host: str, address: str, cidr: str, gateway: str) -> None:
    """Create host's netns, its veth to the switch and its br0 carrying address."""
    ns = netns_name(prefix, host)
    veth = veth_name(prefix, host)
    if not (NETNS_DIR / ns).exists():
        run(["ip", "netns", "add", ns])
    if not link_exists(veth):
        if link_exists("eth0", ns):
            run(["ip", "-n", ns, "link", "del", "eth0"])
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
    run(["ip", "link", "set", veth, "master", switch_name(prefix), "up"])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    if not link_exists("br0", ns):
        run(["ip", "-n", ns, "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"])
    run(["ip", "-n", ns, "link", "set", "eth0", "master", "br0", "up"])
    want = f"{address}/{ipaddress.ip_network(cidr).prefixlen}"
    if want not in _addresses("br0", ns):
        run(["ip", "-n", ns, "addr", "add", want, "dev", "br0"])
    run(["ip", "-n", ns, "link", "set", "br0", "up"])
    run(["ip", "-n", ns, "route", "replace", "default", "via", gateway])
    _ensure_host_port(ns, second_veth_name(prefix, host), "eth1", second_switch_name(prefix), "br1")


def _ensure_host_port(ns: str, veth: str, inner: str, switch: str, bridge: str) -> None:
    """Join a bridge in the host to a switch in the root namespace through a veth pair (no address)."""
    if not link_exists(veth):
        if link_exists(inner, ns):
            run(["ip", "-n", ns, "link", "del", inner])
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", inner, "netns", ns])
    run(["ip", "link", "set", veth, "master", switch, "up"])
    if not link_exists(bridge, ns):
        run(["ip", "-n", ns, "link", "add", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
    run(["ip", "-n", ns, "link", "set", inner, "master", bridge, "up"])
    run(["ip", "-n", ns, "link", "set", bridge, "up"])


def remove_host_network(prefix: str, host: str) -> None:
    """Delete a host's netns and veth; a no-op for parts already gone."""
    ns = netns_name(prefix, host)
    if (NETNS_DIR / ns).exists():
        run(["ip", "netns", "del", ns], check=False)
    for veth in (veth_name(prefix, host), second_veth_name(prefix, host)):
        if link_exists(veth):
            run(["ip", "link", "del", veth], check=False)


def lab_netns(prefix: str) -> list[str]:
    """Return the names of existing network namespaces that belong to the lab (prefix-h*)."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(f"{prefix}-h"))


def lab_links(prefix: str) -> list[str]:
    """Return the names of root-namespace links that belong to the lab (switch and veths)."""
    data = json.loads(run(["ip", "-j", "link", "show"]).stdout or "[]")
    names = [str(link["ifname"]) for link in data]
    switches = {switch_name(prefix), second_switch_name(prefix)}
    return sorted(n for n in names if n in switches or n.startswith(f"{prefix}-h"))


def remove_switch(prefix: str) -> None:
    """Delete the lab switch bridge and any veth left enslaved to it."""
    for name in lab_links(prefix):
        run(["ip", "link", "del", name], check=False)
