"""What onion/ needs to know, and nothing more: how to reach tor, where to keep its files, and
which local targets the two onions point to. The server builds this from its own configuration
(`dropbox.config.Config.onion_settings`); onion/ never reads that configuration, so the arrow
between the two packages points one way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TorSettings:
    mode: str  # "none", "launch" (our own tor) or "attach" (a running tor's control port)
    data_dir: Path  # launch mode: the tor's DataDirectory (its control socket lives there)
    tor_binary: str = "tor"
    control_port: int | None = None
    control_socket: Path | None = None
    control_password_file: Path | None = None
    bootstrap_timeout: int = 180


@dataclass(frozen=True)
class OnionPaths:
    """Where onion/ keeps its files inside the data folder."""

    root: Path

    @property
    def source_key(self) -> Path:
        return self.root / "source.key"

    @property
    def transfer_key(self) -> Path:
        return self.root / "transfer.key"

    @property
    def transfer_clients(self) -> Path:
        return self.root / "transfer_clients"

    @property
    def instance_dir(self) -> Path:
        """The HiddenServiceDir of the source onion when it is an Onionbalance instance."""
        return self.root / "source_instance"

    @property
    def state(self) -> Path:
        return self.root / "services.json"

    def ensure(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)


@dataclass(frozen=True)
class OnionSettings:
    tor: TorSettings
    paths: OnionPaths
    # ADD_ONION targets (`host:port` or `unix:/path`): the public app's listener, and the
    # transfer API's when it runs (None: no transfer onion).
    source_target: str
    transfer_target: str | None = None
    # An Onionbalance frontend address: the source onion is published as an instance of it
    # (onion/instance.py); None: an ordinary onion of its own.
    onionbalance_frontend: str | None = None
