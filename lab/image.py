"""The lab's guest image, built by scripts/build-image and cached by recipe hash."""

from __future__ import annotations

import subprocess
from pathlib import Path

from lab.procs import LabError

BUILD_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "build-image"
DEFAULT_CACHE_DIR = Path("/var/cache/labcloud/images")
BUILD_TIMEOUT = 1800


def ensure_guest_image(cache_dir: Path = DEFAULT_CACHE_DIR, script: Path = BUILD_SCRIPT) -> Path:
    """Return the path of the Debian 12 guest image, building it first if this recipe has none yet."""
    if not script.exists():
        raise LabError(f"{script} is missing: the guest image is built from a labcloud source checkout")
    try:
        # stderr (progress) is passed through; stdout is the image path alone.
        proc = subprocess.run([str(script), "--cache-dir", str(cache_dir)], stdout=subprocess.PIPE,
                              text=True, timeout=BUILD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"building the guest image took over {BUILD_TIMEOUT} s") from exc
    if proc.returncode != 0:
        raise LabError(f"{script} failed (exit {proc.returncode}); its progress lines above say where")
    path = Path(proc.stdout.strip().splitlines()[-1])
    if not path.is_file():
        raise LabError(f"{script} reported {path}, which does not exist")
    return path


NOCLOUD_SCRIPT = BUILD_SCRIPT.parent / "build-image-nocloud"


def ensure_nocloud_image(cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """Return the guest image without cloud-init (derived from the cached one in about 20 s the first time)."""
    return ensure_guest_image(cache_dir, NOCLOUD_SCRIPT)
