"""Errors a user can see: each carries an HTTP status, a code and a message."""

from __future__ import annotations


class ApiError(Exception):
    """An error answered as {"error": {"code", "message", "request_id"}}."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status:
            self.status = status


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class NotFound(ApiError):
    status, code = 404, "not_found"


class Conflict(ApiError):
    status, code = 409, "conflict"


class Unprocessable(ApiError):
    status, code = 422, "unprocessable"


class XmlRejected(ApiError):
    """Domain XML refused (malformed, policy, libvirt, inventory): names the line and element when known."""

    status, code = 422, "invalid_xml"

    def __init__(self, message: str, code: str, line: int | None = None, element: str | None = None) -> None:
        super().__init__(message, code)
        self.extra = {"line": line, "element": element}
