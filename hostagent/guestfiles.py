"""Network files for guests without cloud-init: rendered here, written into the disk by hostagent.inject.

Each NIC is matched by its MAC address, exactly one NIC carries the default route (the
one with a gateway, as in the NoCloud seed), and the files of every network stack the
disk has are written, so the guest's own choice of stack does not matter:

* Debian/Ubuntu ifupdown: ``/etc/network/interfaces.d/labcloud`` plus a udev rule that
  names each NIC by its MAC (ifupdown itself cannot match on a MAC);
* netplan (Ubuntu, Debian cloud images): ``/etc/netplan/60-labcloud.yaml``, the same
  version 2 config the NoCloud seed carries;
* RHEL family NetworkManager: one keyfile per NIC in ``/etc/NetworkManager/system-connections``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from hostagent.seed import SeedNic, network_config


@dataclass(frozen=True)
class GuestFile:
    """One file to write into the guest's root filesystem."""

    path: str       # absolute inside the guest
    content: str
    mode: int = 0o644


def _names(nics: Sequence[SeedNic]) -> list[str]:
    return [nic.name or f"eth{i}" for i, nic in enumerate(nics)]


def hostname_files(hostname: str, nics: Sequence[SeedNic]) -> list[GuestFile]:
    """Return /etc/hostname and an /etc/hosts naming the guest on its first address."""
    first = next((str(ipaddress.ip_interface(a).ip) for nic in nics for a in nic.addresses), None)
    lines = ["127.0.0.1\tlocalhost", f"127.0.1.1\t{hostname}"]
    if first:
        lines.append(f"{first}\t{hostname}")
    lines += ["::1\tlocalhost ip6-localhost ip6-loopback", "ff02::1\tip6-allnodes", "ff02::2\tip6-allrouters"]
    return [GuestFile("/etc/hostname", hostname + "\n"), GuestFile("/etc/hosts", "\n".join(lines) + "\n")]


def ifupdown_files(nics: Sequence[SeedNic]) -> list[GuestFile]:
    """Return an ifupdown stanza per NIC and the udev rule that gives each NIC its name by MAC."""
    stanzas, rules = [], []
    for name, nic in zip(_names(nics), nics, strict=True):
        rules.append(f'SUBSYSTEM=="net", ACTION=="add", ATTR{{address}}=="{nic.mac.lower()}", NAME="{name}"')
        if not nic.addresses:
            stanzas.append(f"auto {name}\niface {name} inet dhcp\n")
            continue
        lines = [f"auto {name}"]
        for i, address in enumerate(nic.addresses):
            family = "inet6" if ipaddress.ip_interface(address).version == 6 else "inet"
            lines.append(f"iface {name} {family} static")
            lines.append(f"    address {address}")
            if i == 0 and nic.gateway:
                lines.append(f"    gateway {nic.gateway}")
            if i == 0 and nic.dns:
                lines.append(f"    dns-nameservers {' '.join(nic.dns)}")
        stanzas.append("\n".join(lines) + "\n")
    header = "# Written by labcloud before first boot (image without cloud-init).\n"
    return [GuestFile("/etc/network/interfaces.d/labcloud", header + "\n".join(stanzas)),
            GuestFile("/etc/udev/rules.d/70-labcloud-net.rules", header + "\n".join(rules) + "\n")]


def netplan_files(nics: Sequence[SeedNic]) -> list[GuestFile]:
    """Return the netplan version 2 config (netplan wants it readable by root only)."""
    text = yaml.safe_dump({"network": network_config(nics)}, default_flow_style=False, sort_keys=False)
    return [GuestFile("/etc/netplan/60-labcloud.yaml", text, 0o600)]


def networkmanager_files(nics: Sequence[SeedNic]) -> list[GuestFile]:
    """Return one NetworkManager keyfile per NIC (NetworkManager ignores keyfiles others can read)."""
    out = []
    for name, nic in zip(_names(nics), nics, strict=True):
        lines = ["[connection]", f"id=labcloud-{name}", "type=ethernet", "autoconnect=true", "",
                 "[ethernet]", f"mac-address={nic.mac.upper()}", ""]
        v4 = [a for a in nic.addresses if ipaddress.ip_interface(a).version == 4]
        if v4:
            lines += ["[ipv4]", "method=manual"]
            for i, address in enumerate(v4, start=1):
                gateway = f",{nic.gateway}" if i == 1 and nic.gateway else ""
                lines.append(f"address{i}={address}{gateway}")
            if nic.dns:
                lines.append("dns=" + "".join(f"{d};" for d in nic.dns))
            if not nic.gateway:
                lines.append("never-default=true")
        else:
            lines += ["[ipv4]", "method=auto"]
        lines += ["", "[ipv6]", "method=ignore", ""]
        out.append(GuestFile(f"/etc/NetworkManager/system-connections/labcloud-{name}.nmconnection",
                             "\n".join(lines), 0o600))
    return out


# Which stack a disk has, judged by a directory that its package installs.
STACKS = (
    ("/etc/network", ifupdown_files),
    ("/etc/netplan", netplan_files),
    ("/etc/NetworkManager", networkmanager_files),
)
