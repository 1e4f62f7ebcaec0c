"""Measurement 6: GET /api/v1/vms with 500 VMs in the inventory, at a fixed rate and flat out.

The load generator runs on the same 2 cores as the controller (and the agents), so
its own CPU (TLS, HTTP) is taken from the server: the sustained rate is a lower bound.
Both generators are bounded by a request count and a duration.

- Fixed rate: requests are scheduled every 1/rate s (open loop); a latency is counted
  from the scheduled moment, so a server that falls behind is not hidden by the
  generator waiting for it (coordinated omission).
- Sustained: a few clients send back to back over keep-alive connections; completed
  200 answers per second of wall time.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from bench.footprint import cpu_ticks
from bench.stats import summary
from lab.cloud import Api

PATH = "/api/v1/vms"


class _Sessions:
    """One keep-alive session per generator thread."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.local = threading.local()
        self.first_error = ""

    def get(self) -> requests.Session:
        """Return this thread's session."""
        session: requests.Session | None = getattr(self.local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # else REQUESTS_CA_BUNDLE would replace the controller's CA
            session.verify = str(self.api.ca)
            session.headers["Authorization"] = f"Bearer {self.api.token}"
            self.local.session = session
        return session


def sequential(api: Api, count: int, max_s: float = 120) -> dict[str, Any]:
    """Send count requests one after the other (at most max_s); return latency percentiles in ms.

    With one request at a time the controller is never queueing: this is what one
    request costs it, next to what it costs under load.
    """
    session = _Sessions(api).get()
    latencies: list[float] = []
    deadline = time.monotonic() + max_s
    size = 0
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        sent = time.monotonic()
        resp = session.get(api.url + PATH, timeout=30)
        if resp.status_code == 200:
            latencies.append((time.monotonic() - sent) * 1000)
            size = len(resp.content)
    out = summary(latencies)
    out["response_bytes"] = size
    return out


def count_vms(api: Api) -> int:
    """Return how many VMs the list answers with."""
    return len(api.call("GET", "/vms", expect=200).json()["vms"])


def fixed_rate(api: Api, rate: float, duration: float, workers: int = 16) -> dict[str, Any]:
    """Send rate requests/s for duration s (open loop); return latency percentiles in ms."""
    sessions = _Sessions(api)
    count = int(rate * duration)
    start = time.monotonic() + 0.5
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()

    def one(k: int) -> None:
        nonlocal errors
        scheduled = start + k / rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            resp = sessions.get().get(api.url + PATH, timeout=30)
            ok = resp.status_code == 200 and len(resp.content) > 0
            if not ok:
                sessions.first_error = sessions.first_error or f"HTTP {resp.status_code}"
        except requests.RequestException as exc:
            sessions.first_error = sessions.first_error or str(exc)
            ok = False
        elapsed = time.monotonic() - scheduled
        with lock:
            if ok:
                latencies.append(elapsed * 1000)
            else:
                errors += 1

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(count)))
    out = summary(latencies)
    out.update(rate=rate, duration_s=duration, errors=errors, first_error=sessions.first_error, unit="ms")
    return out


def sustained(api: Api, duration: float, server_pid: int, clients: int = 4,
              max_requests: int = 100_000) -> dict[str, Any]:
    """Send back to back from clients threads for duration s (at most max_requests); return requests/s.

    Also says how much CPU the controller (server_pid) and this generator used meanwhile,
    in % of one core: near 100% for the controller means its one Python process is the limit.
    """
    sessions = _Sessions(api)
    stop_at = time.monotonic() + duration
    done = errors = 0
    lock = threading.Lock()
    latencies: list[float] = []

    def client() -> None:
        nonlocal done, errors
        session = sessions.get()
        while time.monotonic() < stop_at:
            with lock:
                if done + errors >= max_requests:
                    return
            sent = time.monotonic()
            try:
                resp = session.get(api.url + PATH, timeout=30)
                ok = resp.status_code == 200 and len(resp.content) > 0
            except requests.RequestException as exc:
                sessions.first_error = sessions.first_error or str(exc)
                ok = False
            with lock:
                if ok:
                    done += 1
                    latencies.append((time.monotonic() - sent) * 1000)
                else:
                    errors += 1

    tck = os.sysconf("SC_CLK_TCK")
    server0, own0 = cpu_ticks(server_pid), os.times()
    started = time.monotonic()
    threads = [threading.Thread(target=client, name=f"load-{i}", daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 60)
    elapsed = time.monotonic() - started
    server_cpu = 100.0 * (cpu_ticks(server_pid) - server0) / tck / elapsed
    own1 = os.times()
    own_cpu = 100.0 * (own1.user + own1.system - own0.user - own0.system) / elapsed
    lat = summary(latencies)
    return {"requests_per_s": done / elapsed, "completed": done, "errors": errors, "clients": clients,
            "duration_s": round(elapsed, 2), "first_error": sessions.first_error,
            "controller_cpu_pct": server_cpu, "generator_cpu_pct": own_cpu,
            "latency_ms_median": lat["median"], "latency_ms_p95": lat["p95"]}
