"""The host side of labcloud networks: which switch a NIC plugs into, and VLAN devices.

A host has one switch backend (agent setting ``switch``):

* ``linux`` (the default): Linux bridges. A ``bridge`` network names a bridge the
  operators made; for a ``vlan`` network the agent makes the 802.1Q device
  ``<interface>.<vlan_id>`` and the network's bridge on top of it, idempotently, and
  removes both when the last domain on this host using that bridge is gone, unless the
  network is persistent.
* ``ovs``: Open vSwitch. A ``vlan`` network's bridge is an OVS bridge with a trunk uplink
  the operators made; the VM's port gets the VLAN tag through libvirt's
  ``<virtualport type='openvswitch'/>`` and ``<vlan><tag/></vlan>``. Nothing is created or
  removed on the host. ``bridge`` networks stay plain Linux bridges.

Commands go through a runner (``argv -> CompletedProcess``) so tests can substitute it.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Iterable

from hostagent.domainxml import NicSpec, VlanRecord
from hostagent.errors import VerbError

log = logging.getLogger(__name__)

SWITCHES = ("linux", "ovs")
Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def run_command(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a command without a shell and capture its text output (never raises on exit status)."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def device_name(vlan: VlanRecord) -> str:
    """Return the 802.1Q device name of a VLAN, e.g. ``eth0.100``."""
    return f"{vlan.interface}.{vlan.vlan_id}"


class LinuxVlans:
    """Creates and removes 802.1Q devices and their bridges with iproute2."""

    def __init__(self, runner: Runner = run_command) -> None:
        self.run = runner

    def _ip(self, *args: str) -> None:
        proc = self.run(["ip", *args])
        if proc.returncode != 0:
            raise VerbError(f"ip {' '.join(args)} failed: {(proc.stderr or proc.stdout).strip()}", 500, "network")

    def exists(self, name: str) -> bool:
        """Say whether a network link exists on this host."""
        return self.run(["ip", "link", "show", "dev", name]).returncode == 0

    def ensure(self, vlan: VlanRecord) -> None:
        """Make the VLAN device and its bridge exist and be up; a no-op for parts already there."""
        if not self.exists(vlan.interface):
            raise VerbError(f"interface {vlan.interface} of VLAN {vlan.vlan_id} does not exist on this host",
                            409, "network_missing")
        if not self.exists(device_name(vlan)):
            self._ip("link", "add", "link", vlan.interface, "name", device_name(vlan), "type", "vlan",
                     "id", str(vlan.vlan_id))
            log.info("created VLAN device %s", device_name(vlan))
        if not self.exists(vlan.bridge):
            self._ip("link", "add", vlan.bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
            log.info("created bridge %s", vlan.bridge)
        if vlan.mtu:
            self._ip("link", "set", "dev", device_name(vlan), "mtu", str(vlan.mtu))
            self._ip("link", "set", "dev", vlan.bridge, "mtu", str(vlan.mtu))
        self._ip("link", "set", "dev", device_name(vlan), "master", vlan.bridge, "up")
        self._ip("link", "set", "dev", vlan.bridge, "up")

    def remove(self, vlan: VlanRecord) -> list[str]:
        """Delete the bridge and the VLAN device if present; return what was deleted."""
        removed = []
        for name in (vlan.bridge, device_name(vlan)):
            if self.exists(name):
                self._ip("link", "del", "dev", name)
                removed.append(name)
        if removed:
            log.info("removed %s", ", ".join(removed))
        return removed

    def release_unused(self, vlans: Iterable[VlanRecord], bridges_in_use: set[str]) -> list[str]:
        """Remove the non-persistent VLANs whose bridge no domain of this host uses any more."""
        removed: list[str] = []
        for vlan in vlans:
            if vlan.persistent or vlan.bridge in bridges_in_use:
                continue
            removed += self.remove(vlan)
        return removed


def vlan_of(nic: dict[str, object]) -> VlanRecord | None:
    """Return the VLAN device a NIC of a ``vlan`` network needs, or None for other NICs."""
    if nic.get("type") != "vlan":
        return None
    mtu = nic.get("mtu")
    return VlanRecord(interface=str(nic["interface"]), vlan_id=int(str(nic["vlan_id"])), bridge=str(nic["bridge"]),
                      mtu=int(str(mtu)) if mtu else None, persistent=bool(nic.get("persistent")))


def plan_nics(nics: list[dict[str, object]], switch: str) -> tuple[list[NicSpec], list[VlanRecord]]:
    """Turn the controller's NIC specs into domain interfaces and the VLAN devices to make first.

    Every NIC with a static address on a Linux bridge gets the ``clean-traffic`` filter with
    that address. Open vSwitch ports get none: libvirt's nwfilter works through ebtables and
    iptables, which only see frames crossing a Linux bridge, so on an OVS port it would
    promise a protection it does not give.
    """
    if switch not in SWITCHES:
        raise VerbError(f"switch {switch!r} in the agent settings must be one of {', '.join(SWITCHES)}", 500,
                        "config")
    specs: list[NicSpec] = []
    vlans: list[VlanRecord] = []
    for nic in nics:
        addresses = [str(a) for a in nic.get("addresses") or []]  # type: ignore[attr-defined]
        filter_ip = addresses[0].split("/")[0] if addresses else None
        mtu = int(str(nic["mtu"])) if nic.get("mtu") else None
        vlan = vlan_of(nic)
        if vlan is not None and switch == "ovs":
            specs.append(NicSpec(mac=str(nic["mac"]), bridge=vlan.bridge, ovs=True, vlan_tag=vlan.vlan_id, mtu=mtu))
            continue
        if vlan is not None and vlan not in vlans:
            vlans.append(vlan)
        specs.append(NicSpec(mac=str(nic["mac"]), bridge=str(nic["bridge"]), mtu=mtu, filter_ip=filter_ip))
    return specs, vlans
