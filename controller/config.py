"""Controller settings: one dataclass, read from the environment or given by tests."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Config:
    """Everything the controller needs to know at start-up."""

    data_dir: Path = Path("/var/lib/labcloud")
    listen: str = "127.0.0.1"                    # public API + UI
    port: int = 8470
    agent_listen: str = "127.0.0.1"              # agent channel (mutual TLS)
    agent_port: int = 8471
    console_port: int = 8473                     # console websocket proxy (TLS), on `listen`
    server_names: list[str] = field(default_factory=lambda: ["127.0.0.1", "localhost"])
    admin_password: str | None = None           # else generated and printed once
    host_down_after_s: float = 20.0
    sync_interval_s: float = 5.0
    task_workers: int = 32                      # a burst of creates reaches the agents at once
    join_token_ttl_s: int = 3600
    lab_mode: bool = False
    image_upload_max_bytes: int = 20 * 1024**3   # POST /api/v1/images/upload
    agent_retry_s: float = 60.0                 # a task retries an unreachable agent (restarting) this long
    # Fault injection for the crash-recovery tests (docs/operations.md): a create task waits this
    # long after its domain runs, before it records the result. 0 (the default) in production.
    fault_create_pause_s: float = 0.0

    @property
    def db_path(self) -> Path:
        """Return the SQLite file's path."""
        return self.data_dir / "inventory.db"

    @property
    def pki_dir(self) -> Path:
        """Return the directory of the CA and the controller's certificates."""
        return self.data_dir / "pki"

    @property
    def image_dir(self) -> Path:
        """Return the directory of imported base images."""
        return self.data_dir / "images"

    @property
    def public_url(self) -> str:
        """Return the base URL of the API and UI."""
        return f"https://{self.server_names[0]}:{self.port}"

    @property
    def agent_url(self) -> str:
        """Return the base URL agents use for the mutually authenticated channel."""
        return f"https://{self.agent_listen}:{self.agent_port}"

    @classmethod
    def from_env(cls) -> Config:
        """Build settings from LABCLOUD_* environment variables."""
        cfg = cls()
        env = os.environ
        if "LABCLOUD_DATA_DIR" in env:
            cfg.data_dir = Path(env["LABCLOUD_DATA_DIR"])
        cfg.listen = env.get("LABCLOUD_LISTEN", cfg.listen)
        cfg.port = int(env.get("LABCLOUD_PORT", cfg.port))
        cfg.console_port = int(env.get("LABCLOUD_CONSOLE_PORT", cfg.console_port))
        cfg.agent_listen = env.get("LABCLOUD_AGENT_LISTEN", cfg.agent_listen)
        cfg.agent_port = int(env.get("LABCLOUD_AGENT_PORT", cfg.agent_port))
        if "LABCLOUD_SERVER_NAMES" in env:
            cfg.server_names = [n for n in env["LABCLOUD_SERVER_NAMES"].split(",") if n]
        cfg.admin_password = env.get("LABCLOUD_ADMIN_PASSWORD") or None
        cfg.task_workers = int(env.get("LABCLOUD_TASK_WORKERS", cfg.task_workers))
        if "LABCLOUD_IMAGE_UPLOAD_MAX_BYTES" in env:
            cfg.image_upload_max_bytes = int(env["LABCLOUD_IMAGE_UPLOAD_MAX_BYTES"])
        cfg.lab_mode = env.get("LABCLOUD_LAB_MODE", "") == "1"
        cfg.fault_create_pause_s = float(env.get("LABCLOUD_FAULT_CREATE_PAUSE_S", "0") or 0)
        cfg.agent_retry_s = float(env.get("LABCLOUD_AGENT_RETRY_S", cfg.agent_retry_s))
        return cfg
