"""Persisted tasks: every change to the cloud runs as one, with state and progress."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from controller import reqid
from controller.agentclient import AgentError
from controller.db import Database, now
from controller.errors import ApiError, NotFound

log = logging.getLogger(__name__)

ACTIVE = ("pending", "running")
INTERRUPTED = "the controller stopped while this task was running; check the object's state and retry"


class TaskFailed(Exception):
    """A task step failed with a message meant for the operator."""


class TaskContext:
    """What a running task may do: report progress."""

    def __init__(self, db: Database, task_id: str) -> None:
        self.db, self.task_id = db, task_id
        self.percent = 0

    def progress(self, percent: int, message: str) -> None:
        """Record progress (0-100) and what the task is doing now."""
        log.info("task %s: %d%% %s", self.task_id, percent, message)
        self.percent = percent
        with self.db.write() as w:
            w.execute(
                "UPDATE tasks SET progress = ?, message = ? WHERE id = ?",
                [max(0, min(100, percent)), message, self.task_id],
            )


TaskFn = Callable[[TaskContext], dict[str, Any] | None]


def public(row: dict[str, Any]) -> dict[str, Any]:
    """Return a task row as the API shows it."""
    out = dict(row)
    out["result"] = json.loads(row["result"]) if row.get("result") else None
    return out


class TaskRunner:
    """Creates task rows and runs their work on a thread pool."""

    def __init__(self, db: Database, workers: int = 8) -> None:
        self.db = db
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="task")
        self.futures: dict[str, Future[None]] = {}

    def create(
        self,
        kind: str,
        user_id: int | None,
        vm_id: str | None = None,
        vm_name: str | None = None,
        host_id: str | None = None,
    ) -> str:
        """Insert a pending task (joins the caller's write transaction) and return its id."""
        task_id = str(uuid.uuid4())
        with self.db.write() as w:
            w.execute(
                "INSERT INTO tasks (id, kind, state, progress, message, request_id, user_id, vm_id, vm_name,"
                " host_id, created_at) VALUES (?, ?, 'pending', 0, 'queued', ?, ?, ?, ?, ?, ?)",
                [task_id, kind, reqid.get(), user_id, vm_id, vm_name, host_id, now()],
            )
        return task_id

    def submit(self, task_id: str, fn: TaskFn, on_failure: Callable[[], None] | None = None) -> None:
        """Run fn in the background; its return value becomes the task's result."""
        request_id = reqid.get()
        self.futures[task_id] = self.pool.submit(self._run, task_id, fn, on_failure, request_id)

    def _run(
        self, task_id: str, fn: TaskFn, on_failure: Callable[[], None] | None, request_id: str
    ) -> None:
        reqid.set(request_id)
        reqid.set_operation(task_id)
        with self.db.write() as w:
            w.execute("UPDATE tasks SET state = 'running', started_at = ? WHERE id = ?", [now(), task_id])
        try:
            result = fn(TaskContext(self.db, task_id))
        except Exception as exc:
            message = exc.message if isinstance(exc, ApiError) else str(exc)
            if not isinstance(exc, (TaskFailed, ApiError, AgentError)):
                log.exception("task %s crashed", task_id)
                message = f"internal error: {exc}"
            log.warning("task %s failed: %s", task_id, message)
            if on_failure is not None:
                try:
                    on_failure()
                except Exception:
                    log.exception("task %s: cleanup after failure failed", task_id)
            self._finish(task_id, "failed", error=message)
        else:
            self._finish(task_id, "succeeded", result=result)
        finally:
            self.futures.pop(task_id, None)
            self.db.close()

    def _finish(self, task_id: str, state: str, error: str | None = None, result: Any = None) -> None:
        with self.db.write() as w:
            w.execute(
                "UPDATE tasks SET state = ?, error = ?, result = ?, finished_at = ?,"
                " progress = CASE WHEN ? = 'succeeded' THEN 100 ELSE progress END,"
                " message = CASE WHEN ? = 'succeeded' THEN 'done' ELSE 'failed' END WHERE id = ?",
                [state, error, json.dumps(result) if result is not None else None, now(), state, state, task_id],
            )

    def get(self, task_id: str) -> dict[str, Any]:
        """Return one task as the API shows it."""
        row = self.db.one("SELECT * FROM tasks WHERE id = ?", [task_id])
        if row is None:
            raise NotFound(f"task {task_id} not found")
        return public(row)

    def active_for_vm(self, vm_id: str) -> dict[str, Any] | None:
        """Return the VM's pending or running task, if any."""
        return self.db.one("SELECT * FROM tasks WHERE vm_id = ? AND state IN ('pending', 'running')", [vm_id])

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking work; optionally wait for running tasks."""
        self.pool.shutdown(wait=wait, cancel_futures=True)
