"""Request ids: one id follows an operation through controller, tasks and agents."""

from __future__ import annotations

import contextvars
import logging
import re
import uuid

HEADER = "X-Request-Id"
OPERATION_HEADER = "X-Operation-Id"  # the task id: the same on every retry of a verb
_current: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_operation: contextvars.ContextVar[str] = contextvars.ContextVar("operation_id", default="")
_VALID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def new() -> str:
    """Return a fresh request id."""
    return "req-" + uuid.uuid4().hex


def get() -> str:
    """Return the request id of the current context ('-' outside a request)."""
    return _current.get()


def set(value: str) -> None:
    """Bind a request id to the current context."""
    _current.set(value)


def operation() -> str:
    """Return the operation (task) id of the current context ('' outside a task)."""
    return _operation.get()


def set_operation(value: str) -> None:
    """Bind an operation (task) id to the current context."""
    _operation.set(value)


def accept(header_value: str | None) -> str:
    """Return the caller's id if well formed, else a new one."""
    if header_value and _VALID.match(header_value):
        return header_value
    return new()


class RequestIdFilter(logging.Filter):
    """Adds %(request_id)s to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _current.get()
        return True


def setup_logging(level: int = logging.INFO, name: str = "labcloud") -> None:
    """Log to stderr with the request id in every line."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s {name} %(levelname)s [%(request_id)s] %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
