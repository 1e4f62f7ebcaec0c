"""The controller's services, built once per process and shared by API, web and jobs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from controller.agentclient import AgentClient, AgentPool
from controller.auth import LoginThrottle
from controller.config import Config
from controller.consoletokens import ConsoleTokens
from controller.db import Database
from controller.errors import Conflict
from controller.pki import CertificateAuthority
from controller.tasks import TaskRunner
from controller.tls import CONTROLLER_CLIENT_CN

log = logging.getLogger(__name__)


@dataclass
class Core:
    """Database, CA, task runner and agent clients."""

    config: Config
    db: Database
    ca: CertificateAuthority
    tasks: TaskRunner
    agents: AgentPool
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    consoles: ConsoleTokens = field(default_factory=lambda: ConsoleTokens())
    generated_admin_password: str | None = None

    @classmethod
    def start(cls, config: Config) -> Core:
        """Open (and migrate) the inventory, load or create the CA, recover tasks."""
        from controller import recovery
        from controller.auth import bootstrap_admin

        config.data_dir.mkdir(parents=True, exist_ok=True)
        config.data_dir.chmod(0o700)
        config.image_dir.mkdir(exist_ok=True)
        db = Database(config.db_path)
        db.migrate()
        ca = CertificateAuthority.load_or_create(config.pki_dir)
        cert, key = ca.ensure_pair(config.pki_dir, "client", CONTROLLER_CLIENT_CN, [], server=False, client=True)
        tasks = TaskRunner(db, config.task_workers)
        core = cls(config, db, ca, tasks, AgentPool(config.pki_dir / "ca.pem", cert, key))
        recovered = recovery.recover(core)
        if recovered:
            log.warning("resolved %d interrupted task(s) by asking the agents", recovered)
        core.generated_admin_password = bootstrap_admin(db, config.admin_password)
        return core

    def agent(self, host_id: str) -> AgentClient:
        """Return a client for a host's agent."""
        host = self.db.one("SELECT * FROM hosts WHERE id = ?", [host_id])
        if host is None:
            raise Conflict(f"host {host_id} is no longer in the inventory")
        return self.agents.client(host)

    def close(self) -> None:
        """Stop the task runner."""
        self.tasks.shutdown(wait=False)
