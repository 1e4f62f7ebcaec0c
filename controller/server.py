"""Runs the controller: the public HTTPS server, the agent channel and periodic jobs."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from cheroot import wsgi

from controller.agentapi import create_agent_app
from controller.app import create_app
from controller.backup import controller_lock
from controller.config import Config
from controller.console import ConsoleProxy, flask_session_reader
from controller.core import Core
from controller.hosts import mark_silent_hosts_down
from controller.pki import fingerprint
from controller.tls import server_tls, tls_adapter

log = logging.getLogger(__name__)


def serve(config: Config) -> None:
    """Start everything and block until SIGTERM or SIGINT; one controller per data directory."""
    with controller_lock(config.data_dir, wait=False):
        _serve(config)


def _serve(config: Config) -> None:
    core = Core.start(config)
    pki = config.pki_dir
    names = sorted({*config.server_names, config.listen, config.agent_listen} - {"0.0.0.0", "::"})  # noqa: S104
    cert, key = core.ca.ensure_pair(pki, "server", names[0], names, server=True, client=False)
    app = create_app(config, core)
    public = wsgi.Server((config.listen, config.port), app, numthreads=16, server_name="labcloud")
    public.ssl_adapter = tls_adapter(str(cert), str(key))
    channel = wsgi.Server((config.agent_listen, config.agent_port), create_agent_app(core), numthreads=16,
                          server_name="labcloud-agent-channel")
    channel.ssl_adapter = tls_adapter(str(cert), str(key), client_ca=str(pki / "ca.pem"))

    consoles = ConsoleProxy(core, flask_session_reader(app), config.listen, config.console_port,
                            server_tls(str(cert), str(key)),
                            origins=[f"https://{name}:{config.port}" for name in config.server_names])

    jobs = BackgroundScheduler(daemon=True)
    jobs.add_job(mark_silent_hosts_down, "interval", args=[core], seconds=config.sync_interval_s,
                 id="hosts-down", max_instances=1, coalesce=True)
    jobs.start()

    if core.generated_admin_password:
        print(f"labcloud: created user 'admin' with password {core.generated_admin_password}"
              " (shown once; change it or set LABCLOUD_ADMIN_PASSWORD)", flush=True)
    print(f"labcloud: API and UI on {config.public_url} (CA fingerprint sha256 {fingerprint(core.ca.cert)})",
          flush=True)
    print(f"labcloud: agent channel (mutual TLS) on {config.agent_url}", flush=True)
    print(f"labcloud: console proxy (websockets) on wss://{config.listen}:{config.console_port}", flush=True)

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    public.prepare()
    channel.prepare()
    threads = [threading.Thread(target=s.serve, name=n, daemon=True)
               for s, n in ((public, "public"), (channel, "channel"))]
    threads.append(threading.Thread(target=consoles.serve_forever, name="consoles", daemon=True))
    for t in threads:
        t.start()
    print("labcloud: ready", flush=True)
    stop.wait()
    jobs.shutdown(wait=False)
    consoles.shutdown()
    public.stop()
    channel.stop()
    core.close()
