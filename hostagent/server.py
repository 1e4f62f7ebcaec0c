"""Runs the agent: the verb server (mutual TLS) and the heartbeat to the controller."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import requests
from cheroot import wsgi

from controller import reqid
from controller.tls import server_tls, tls_adapter
from hostagent.app import Agent, create_agent_app
from hostagent.config import AgentConfig
from hostagent.console import VncRelay, live_vnc_port
from hostagent.hypervisor import start_event_loop

log = logging.getLogger(__name__)


def heartbeat_loop(agent: Agent, stop: threading.Event, wake: threading.Event | None = None) -> None:
    """Report facts and domain states to the controller until stopped; wake sends one at once."""
    wake = wake or threading.Event()
    url = agent.config.agent_channel_url + "/agent/v1/heartbeat"
    failures = 0
    while not stop.is_set():
        reqid.set(reqid.new())
        try:
            payload = {"facts": agent.facts(), "domains": agent.vms.list()}
            resp = agent.session.post(url, json=payload, timeout=10, headers={reqid.HEADER: reqid.get()})
            resp.raise_for_status()
            if failures:
                log.info("heartbeat delivered again after %d failure(s)", failures)
            failures = 0
        except (requests.RequestException, OSError, Exception) as exc:  # keep beating whatever fails
            failures += 1
            if failures in (1, 10) or failures % 100 == 0:
                log.warning("heartbeat failed (%d in a row): %s", failures, exc)
        # A lifecycle event (e.g. `virsh destroy` by hand) wakes the loop: the controller
        # hears of it within a second instead of at the next interval.
        wake.wait(agent.config.heartbeat_interval_s)
        wake.clear()


def serve(config: AgentConfig) -> None:
    """Start the verb server and the heartbeat; block until SIGTERM or SIGINT."""
    start_event_loop()
    agent = Agent(config)
    agent.storage.pool  # noqa: B018 - define and start the pool before the first verb
    server = wsgi.Server((config.address, config.port), create_agent_app(agent), numthreads=8,
                         server_name="labcloud-agent")
    server.ssl_adapter = tls_adapter(str(config.cert_path), str(config.key_path), client_ca=str(config.ca_path))
    relay = VncRelay(live_vnc_port(agent.hv), config.address, config.console_port,
                     server_tls(str(config.cert_path), str(config.key_path), client_ca=str(config.ca_path)))
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.prepare()
    threading.Thread(target=server.serve, name="verbs", daemon=True).start()
    threading.Thread(target=relay.serve_forever, name="consoles", daemon=True).start()
    wake = threading.Event()
    agent.hv.on_lifecycle(lambda _uuid, _event: wake.set())
    beat = threading.Thread(target=heartbeat_loop, args=(agent, stop, wake), name="heartbeat", daemon=True)
    beat.start()
    log.info("agent %s serving on https://%s:%d (virt_type=%s)", config.name, config.address, config.port,
             config.virt_type)
    print("labcloud-agent: ready", flush=True)
    stop.wait()
    wake.set()
    relay.shutdown()
    server.stop()
    agent.hv.close()
