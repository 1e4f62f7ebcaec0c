"""Errors of agent verbs, and the one place libvirt errors are translated."""

from __future__ import annotations

import libvirt


class VerbError(Exception):
    """A verb failed; answered as {"error": {"code", "message"}} with a status."""

    def __init__(self, message: str, status: int = 500, code: str = "agent_error") -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code


NOT_FOUND = {libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_STORAGE_POOL}
INVALID = {libvirt.VIR_ERR_XML_ERROR, libvirt.VIR_ERR_XML_DETAIL, libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
           libvirt.VIR_ERR_INVALID_ARG}
STATE = {libvirt.VIR_ERR_OPERATION_INVALID, libvirt.VIR_ERR_OPERATION_FAILED}


def from_libvirt(exc: libvirt.libvirtError, doing: str) -> VerbError:
    """Turn a libvirtError into a VerbError that says what was being done."""
    code = exc.get_error_code()
    message = f"{doing}: {exc.get_error_message() or exc}"
    if code in NOT_FOUND:
        return VerbError(message, 404, "not_found")
    if code in INVALID:
        return VerbError(message, 422, "invalid")
    if code in STATE:
        return VerbError(message, 409, "wrong_state")
    if code == libvirt.VIR_ERR_AGENT_UNRESPONSIVE:
        return VerbError(message + " (is qemu-guest-agent running in the guest?)", 409, "guest_agent")
    return VerbError(message, 500, "libvirt")
