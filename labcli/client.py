"""The API client: one verified HTTPS session to the controller, errors turned into CliErrors."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import requests

from labcli.errors import ApiError, ConnectionFailed

TaskCallback = Callable[[dict[str, Any]], None]
FINISHED = ("succeeded", "failed")


class Client:
    """Calls /api/v1 on one controller, trusting only the given CA file."""

    def __init__(self, url: str, ca_file: str, token: str | None = None, timeout: float = 60) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies, no REQUESTS_CA_BUNDLE: only the controller's CA is trusted
        self.session.verify = ca_file
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def request(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        """Call the API and return its JSON; raise ApiError or ConnectionFailed."""
        url = f"{self.url}/api/v1{path}"
        try:
            resp = self.session.request(method, url, json=body, params=params, timeout=self.timeout)
        except requests.exceptions.SSLError as exc:
            raise ConnectionFailed(f"TLS verification of {self.url} failed (is it the controller you logged in "
                                   f"to? 'labcloud login' again if its CA changed): {_reason(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise ConnectionFailed(f"cannot reach the controller at {self.url}: {_reason(exc)}") from None
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.ok and data is not None:
            return data
        raise _api_error(resp, data)

    def get(self, path: str, **params: Any) -> Any:
        """GET path and return its JSON."""
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any = None) -> Any:
        """POST body to path and return its JSON."""
        return self.request("POST", path, {} if body is None else body)

    def put(self, path: str, body: Any) -> Any:
        """PUT body to path and return its JSON."""
        return self.request("PUT", path, body)

    def delete(self, path: str) -> Any:
        """DELETE path and return its JSON."""
        return self.request("DELETE", path)

    def wait_task(self, task_id: str, on_update: TaskCallback | None = None, interval: float = 0.5) -> dict[str, Any]:
        """Poll a task until it has finished; call on_update with each state seen; return it."""
        while True:
            task: dict[str, Any] = self.get(f"/tasks/{task_id}")["task"]
            if on_update is not None:
                on_update(task)
            if task["state"] in FINISHED:
                return task
            time.sleep(interval)


def _api_error(resp: requests.Response, data: Any) -> ApiError:
    err = data.get("error") if isinstance(data, dict) else None
    request_id = resp.headers.get("X-Request-Id")
    if not isinstance(err, dict):
        return ApiError(resp.status_code, "http", f"HTTP {resp.status_code} from {resp.url}: {resp.text[:200]}",
                        request_id)
    line = err.get("line")
    return ApiError(resp.status_code, str(err.get("code", "")), str(err.get("message", "")),
                    err.get("request_id") or request_id, line if isinstance(line, int) else None,
                    err.get("element") or None)


def _reason(exc: requests.exceptions.RequestException) -> str:
    """Return the reason inside a requests exception (urllib3 wraps it in a MaxRetryError)."""
    inner = exc.args[0] if exc.args else exc
    return str(getattr(inner, "reason", None) or inner)
