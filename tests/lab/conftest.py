"""The lab tests' helpers; the lab cloud fixtures themselves live in tests/labcloud.py (shared with browser tests)."""

from tests.labcloud import create_vm, destroy_vm, ping_lost, ping_until, wait_guest_agent

__all__ = ["create_vm", "destroy_vm", "ping_lost", "ping_until", "wait_guest_agent"]
