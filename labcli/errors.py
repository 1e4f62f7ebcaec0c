"""What can go wrong in a `labcloud` command, and the exit status each failure gives."""

from __future__ import annotations

OK = 0
FAILED = 1         # the API refused the request, or a task failed
USAGE = 2          # bad command line (argparse uses 2 as well)
AUTH = 3           # not logged in, the token or password was refused, or the role does not allow it
NOT_FOUND = 4      # no such VM, host, task... (or another user's)
CONNECTION = 5     # the controller cannot be reached, or its TLS certificate is not the trusted one
INTERRUPTED = 130  # Ctrl-C


class CliError(Exception):
    """A failure to report on stderr with an exit status."""

    exit_code = FAILED

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.message} (request {self.request_id})" if self.request_id else self.message


class NotLoggedIn(CliError):
    """No stored login, or a damaged one."""

    exit_code = AUTH


class ConnectionFailed(CliError):
    """The controller did not answer, or TLS verification failed."""

    exit_code = CONNECTION


class UsageError(CliError):
    """The command line makes no sense (found after argparse)."""

    exit_code = USAGE


class ApiError(CliError):
    """The API answered with its error document."""

    def __init__(self, status: int, code: str, message: str, request_id: str | None = None,
                 line: int | None = None, element: str | None = None) -> None:
        super().__init__(message, request_id)
        self.status, self.code, self.line, self.element = status, code, line, element

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        """Map the HTTP status to the CLI's exit status."""
        if self.status in (401, 403):
            return AUTH
        if self.status == 404:
            return NOT_FOUND
        return FAILED

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.element:
            where.append(f"element <{self.element}>")
        text = f"{', '.join(where)}: {self.message}" if where else self.message
        return f"{text} (request {self.request_id})" if self.request_id else text


class TaskFailed(CliError):
    """A task the command waited for ended failed."""
