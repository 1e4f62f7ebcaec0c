"""Agent settings: a JSON file written by `labcloud-agent join`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_PATH = Path("/etc/labcloud/agent.json")


@dataclass
class AgentConfig:
    """What the agent needs: who it is, where the controller is, its pool."""

    controller_url: str                       # public URL (join only)
    agent_channel_url: str                    # mutually authenticated channel
    host_id: str
    name: str
    address: str
    port: int = 8472
    console_port: int = 8474                  # the VNC relay for the controller's console proxy (websocket, mTLS)
    pool_name: str = "labcloud"
    pool_path: str = "/var/lib/libvirt/images/labcloud"
    virt_type: str = "kvm"                    # "qemu" (TCG) where KVM cannot run guests
    libvirt_uri: str = "qemu:///system"
    heartbeat_interval_s: float = 3.0
    shared_pool_path: str | None = None       # a directory every host mounts at this path (NFS)
    shared_pool_unsafe: bool = False          # libvirt cannot see it is shared (a plain directory, the lab)
    libvirt_pki_dir: str | None = None        # TLS between libvirt daemons (migration); None: plain TCP, lab only
    config_dir: str = "/etc/labcloud"
    switch: str = "linux"                     # VLAN networks: "linux" (802.1Q + bridge) or "ovs" (port tags)
    # Fault injection for the crash-recovery tests (docs/operations.md), from the environment
    # variable LABCLOUD_AGENT_FAULT_CREATE_PAUSE_S at serve: a create waits this long between
    # defining and starting its domain. 0 (the default) in production.
    fault_create_pause_s: float = 0.0

    @property
    def ca_path(self) -> Path:
        """Return the CA certificate that signs the controller's and this host's certificates."""
        return Path(self.config_dir) / "ca.pem"

    @property
    def cert_path(self) -> Path:
        """Return this host's certificate (server and client)."""
        return Path(self.config_dir) / "host.pem"

    @property
    def key_path(self) -> Path:
        """Return this host's private key."""
        return Path(self.config_dir) / "host.key"

    def save(self, path: Path) -> None:
        """Write the settings as JSON."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        """Read the settings; a clear error if the host has not joined yet."""
        if not path.exists():
            raise SystemExit(f"{path} does not exist: run 'labcloud-agent join URL TOKEN' first")
        return cls(**json.loads(path.read_text()))
