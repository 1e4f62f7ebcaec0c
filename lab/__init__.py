"""Many libvirt hosts on one machine, for labcloud's tests and demo (SPEC section 6)."""

from lab.hosts import LabHost
from lab.lab import Lab
from lab.procs import LabError

__all__ = ["Lab", "LabError", "LabHost"]
