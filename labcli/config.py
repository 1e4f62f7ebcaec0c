"""Where the CLI keeps the controller's URL, the API token and the trusted CA."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from labcli.errors import NotLoggedIn


def config_path() -> Path:
    """Return the config file: $LABCLOUD_CONFIG, else $XDG_CONFIG_HOME/labcloud/config.json (~/.config)."""
    override = os.environ.get("LABCLOUD_CONFIG")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "labcloud" / "config.json"


def ca_path_for(path: Path) -> Path:
    """Return where the CA trusted by the config at path is kept (next to it)."""
    return path.with_name(path.stem + ".ca.pem")


@dataclass
class Config:
    """A login: the controller, the token and who it belongs to."""

    url: str
    token: str
    username: str
    role: str
    ca_file: str

    def save(self, path: Path) -> None:
        """Write the config readable by its owner only (dir 0700, file 0600)."""
        write_private(path, (json.dumps(asdict(self), indent=2) + "\n").encode())

    @classmethod
    def load(cls, path: Path) -> Config:
        """Read the config; raise NotLoggedIn when there is none."""
        try:
            data = json.loads(path.read_text())
            return cls(**{k: str(data[k]) for k in ("url", "token", "username", "role", "ca_file")})
        except FileNotFoundError:
            raise NotLoggedIn("not logged in; run 'labcloud login URL --ca-sha256 FINGERPRINT' first") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise NotLoggedIn(f"{path} is damaged ({exc}); run 'labcloud login' again") from None


def write_private(path: Path, data: bytes) -> None:
    """Replace path atomically with data, mode 0600, creating its directory with mode 0700."""
    directory = path.parent
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
        directory.chmod(0o700)  # mkdir's mode is filtered by the umask
    elif directory.name == "labcloud":  # our own directory; a LABCLOUD_CONFIG elsewhere is left as it is
        directory.chmod(0o700)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.")  # created 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove(path: Path) -> bool:
    """Delete the config and its CA; return whether there was a config."""
    existed = path.exists()
    path.unlink(missing_ok=True)
    ca_path_for(path).unlink(missing_ok=True)
    return existed
