"""The service configuration: one TOML file, read once at the edge into a frozen dataclass tree.

Nothing else in dropbox/ reads files or environment variables for settings: `create_app(config)`
and the commands receive a `Config`. Relative paths are resolved against the folder of the config
file, so a config folder can be moved as a whole. Unknown keys are errors (a typo must not silently
fall back to a default), and so is anything unsafe, such as listening on a public address.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keys.codename import CHEAPEST, PRODUCTION, Argon2Profile
from keys.errors import ConfigError
from onion.client_auth import normalize_address
from onion.settings import OnionPaths, OnionSettings, TorSettings

GIB = 1024**3
MIB = 1024**2

ARGON2_PROFILES: dict[str, Argon2Profile] = {"production": PRODUCTION, "cheapest": CHEAPEST}
TOR_MODES = ("none", "launch", "attach")
LOCALES = ("en", "fa_AF", "ps", "ur", "fa", "ar")
FALLBACK_LOCALE = "en"


@dataclass(frozen=True)
class Localized:
    """One text in several languages, e.g. {"en": "Where?", "ps": "چیرته؟"}."""

    texts: Mapping[str, str]

    def text(self, locale: str) -> str:
        """The text in `locale`, else in its language ("fa" for "fa_AF"), else in English,
        else the first one given ("" when there is none)."""
        language = locale.split("_", 1)[0]
        for candidate in (locale, language, FALLBACK_LOCALE):
            if candidate in self.texts:
                return self.texts[candidate]
        return next(iter(self.texts.values()), "")


@dataclass(frozen=True)
class Listen:
    """Where a listener binds: a unix socket path, or a loopback host and port."""

    host: str | None = None
    port: int = 0
    unix_path: Path | None = None

    def __str__(self) -> str:
        if self.unix_path is not None:
            return f"unix:{self.unix_path}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True)
class ServerConfig:
    listen: Listen = field(default_factory=lambda: Listen("127.0.0.1", 8080))
    idle_timeout_minutes: int = 30
    # Shown on every page / on the landing page; a plain string or one text per locale.
    instance_name: Localized = field(default_factory=lambda: Localized({FALLBACK_LOCALE: "Amanat"}))
    instance_description: Localized = field(default_factory=lambda: Localized({}))
    # A connection must finish its request headers this long after it opened (or after its
    # previous response); the same time closes an idle keep-alive connection.
    header_timeout_seconds: int = 20
    # An upload or form body that sends nothing for this long is refused and its connection
    # closed: a stalled body would otherwise hold its buffers and its descriptor forever.
    body_idle_timeout_seconds: int = 60
    # Open connections at most (further lowered to fit the process's open-file limit): beyond
    # it the connection that has waited longest for its headers is closed.
    max_connections: int = 4096
    max_sessions: int = 50_000  # logged-in sources; nobody else has a server-side session
    max_anonymous_clients: int = 10_000  # login-attempt counters of visitors not logged in
    # Several nodes behind one onion (dropbox/cluster.py): the key every node shares (sessions
    # and anonymous forms then travel sealed in cookies), and how many nodes share the per-visitor
    # login limit (each node allows its share).
    session_key_file: Path | None = None
    cluster_nodes: int = 1


@dataclass(frozen=True)
class StorageConfig:
    data_dir: Path
    database_url: str
    reserve_bytes: int = 1 * GIB
    # Where ciphertext goes: "files" (a folder under data_dir, the default) or "database" (chunks
    # in PostgreSQL, shared by every node of the service: docs/architecture.md).
    ciphertext: str = "files"

    @property
    def store_dir(self) -> Path:
        """Where the ciphertext store keeps its files."""
        return self.data_dir / "store"


@dataclass(frozen=True)
class LimitsConfig:
    max_file_bytes: int = 2 * GIB
    max_submission_bytes: int = 4 * GIB
    max_files: int = 50
    max_message_bytes: int = 4 * MIB
    max_field_bytes: int = 8 * 1024
    max_fields: int = 100
    max_concurrent_uploads: int = 8  # received at once (~120 KiB each at Tor speed, ~3 MiB fast)
    max_concurrent_uploads_per_session: int = 2
    # Resumable uploads (tus, dropbox/resumable.py): an unfinished one holds an open file and up
    # to 64 KiB of memory; one left alone this long is deleted, and so is a finished one that no
    # submission named within it.
    resumable_expiry_seconds: int = 6 * 3600
    max_resumable_uploads: int = 256  # open at once, all sources (the longest idle gives way)
    max_resumable_uploads_per_session: int = 2  # unfinished ones; the page sends one at a time


@dataclass(frozen=True)
class KeysConfig:
    org_public_key: Path
    keyring: Path
    instance_salt: Path
    argon2_profile: str = "production"
    max_concurrent_argon2: int = 2
    argon2_queue: int = 32  # derivations that may wait; beyond, the page says "busy"
    login_attempts_per_session_per_minute: int = 5

    @property
    def profile(self) -> Argon2Profile:
        return ARGON2_PROFILES[self.argon2_profile]


@dataclass(frozen=True)
class TransferConfig:
    listen: Listen | None = None
    retention_days: int = 0
    signing_key: Path | None = None
    # How many investigators must acknowledge a submission before its retention starts:
    # None is every active investigator (`acknowledgements = "all"`), else that many.
    acknowledgements: int | None = None


@dataclass(frozen=True)
class TorConfig:
    mode: str = "none"
    control_port: int | None = None
    control_socket: Path | None = None
    data_dir: Path | None = None
    tor_binary: str = "tor"
    control_password_file: Path | None = None  # attach mode: HashedControlPassword auth
    bootstrap_timeout: int = 180  # launch mode: seconds for tor to reach the Tor network
    # the Onionbalance frontend this node's source onion is an instance of (56 characters)
    onionbalance_frontend: str | None = None


@dataclass(frozen=True)
class I18nConfig:
    default_locale: str = "en"
    questionnaire: Path | None = None


@dataclass(frozen=True)
class Config:
    """The whole configuration. `path` is the file it came from (None when built in code)."""

    server: ServerConfig
    storage: StorageConfig
    limits: LimitsConfig
    keys: KeysConfig
    transfer: TransferConfig
    tor: TorConfig
    i18n: I18nConfig
    path: Path | None = None

    def onion_settings(self) -> OnionSettings:
        """What onion/ needs of this configuration (it reads nothing else of it)."""
        tor = self.tor
        return OnionSettings(
            tor=TorSettings(
                mode=tor.mode, data_dir=tor.data_dir or self.storage.data_dir / "tor",
                tor_binary=tor.tor_binary, control_port=tor.control_port,
                control_socket=tor.control_socket,
                control_password_file=tor.control_password_file,
                bootstrap_timeout=tor.bootstrap_timeout,
            ),
            paths=OnionPaths(self.storage.data_dir / "onion"),
            source_target=str(self.server.listen),
            transfer_target=None if self.transfer.listen is None else str(self.transfer.listen),
            onionbalance_frontend=tor.onionbalance_frontend,
        )


def load_config(path: Path | str) -> Config:
    """Read and check a TOML config file. Raises ConfigError saying what is wrong and where."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the config file {path} is not valid TOML: {exc}") from None
    return parse_config(data, path.resolve().parent, path=path.resolve())


def parse_config(data: dict[str, Any], base_dir: Path, path: Path | None = None) -> Config:
    """Build a Config from parsed TOML; relative paths are taken from `base_dir`."""
    sections = _Reader(data, "", base_dir)
    sections.only({"server", "storage", "limits", "keys", "transfer", "tor", "i18n"})
    config = Config(
        server=_server(sections.section("server")),
        storage=_storage(sections.section("storage")),
        limits=_limits(sections.section("limits")),
        keys=_keys(sections.section("keys")),
        transfer=_transfer(sections.section("transfer")),
        tor=_tor(sections.section("tor")),
        i18n=_i18n(sections.section("i18n")),
        path=path,
    )
    _check_limits(config.limits)
    return config


def parse_listen(text: str, where: str, base_dir: Path) -> Listen:
    """`unix:/path` or `HOST:PORT` where HOST is a loopback address (127.0.0.0/8, [::1])."""
    if text.startswith("unix:"):
        raw = text[len("unix:") :]
        if not raw:
            raise ConfigError(f"{where}: 'unix:' needs a socket path")
        return Listen(unix_path=_resolve(base_dir, raw))
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"{where}: expected HOST:PORT or unix:/path, got {text!r}")
    host = host.removeprefix("[").removesuffix("]")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"{where}: {host!r} is not an IP address; use 127.0.0.1 or a unix socket"
        ) from None
    if not address.is_loopback:
        raise ConfigError(
            f"{where}: refusing to listen on {host}: Amanat must be reachable only through its "
            "Tor onion service, so it listens on 127.0.0.1 (or ::1) or a unix socket. "
            "A public address would let anyone bypass Tor and see who connects."
        )
    return Listen(host=str(address), port=int(port_text))


# --- sections ----------------------------------------------------------------------------------


def _server(r: _Reader) -> ServerConfig:
    r.only({"listen", "idle_timeout_minutes", "instance_name", "instance_description",
            "max_sessions", "header_timeout_seconds", "body_idle_timeout_seconds",
            "max_connections", "max_anonymous_clients", "session_key_file", "cluster_nodes"})
    d = ServerConfig()
    if r.table.get("cluster_nodes", 1) != 1 and "session_key_file" not in r.table:
        raise ConfigError("[server] cluster_nodes needs session_key_file: without a key every "
                          "node shares, a source is logged out whenever another node answers")
    return ServerConfig(
        listen=r.listen("listen", None) or d.listen,
        idle_timeout_minutes=r.integer("idle_timeout_minutes", d.idle_timeout_minutes, minimum=1),
        instance_name=r.localized("instance_name", d.instance_name),
        instance_description=r.localized("instance_description", d.instance_description),
        max_sessions=r.integer("max_sessions", d.max_sessions, minimum=1),
        header_timeout_seconds=r.integer("header_timeout_seconds", d.header_timeout_seconds,
                                         minimum=1),
        body_idle_timeout_seconds=r.integer("body_idle_timeout_seconds",
                                            d.body_idle_timeout_seconds, minimum=1),
        max_connections=r.integer("max_connections", d.max_connections, minimum=16),
        max_anonymous_clients=r.integer("max_anonymous_clients", d.max_anonymous_clients,
                                        minimum=1),
        session_key_file=r.path("session_key_file", None),
        cluster_nodes=r.integer("cluster_nodes", d.cluster_nodes, minimum=1),
    )


def _storage(r: _Reader) -> StorageConfig:
    r.only({"data_dir", "database_url", "reserve_bytes", "ciphertext"})
    data_dir = r.path("data_dir", None)
    if data_dir is None:
        raise ConfigError("[storage] data_dir is required")
    default_url = f"sqlite+aiosqlite:///{data_dir / 'amanat.sqlite3'}"
    database_url = r.string("database_url", default_url)
    ciphertext = r.string("ciphertext", "files")
    if ciphertext not in ("files", "database"):
        raise ConfigError('[storage] ciphertext must be "files" or "database"')
    if ciphertext == "database" and not database_url.startswith("postgresql"):
        raise ConfigError('[storage] ciphertext = "database" needs a PostgreSQL database_url')
    return StorageConfig(
        data_dir=data_dir,
        database_url=database_url,
        reserve_bytes=r.integer("reserve_bytes", 1 * GIB, minimum=0),
        ciphertext=ciphertext,
    )


def _limits(r: _Reader) -> LimitsConfig:
    d = LimitsConfig()
    names = ("max_file_bytes", "max_submission_bytes", "max_files", "max_message_bytes",
             "max_field_bytes", "max_fields", "max_concurrent_uploads",
             "max_concurrent_uploads_per_session", "resumable_expiry_seconds",
             "max_resumable_uploads", "max_resumable_uploads_per_session")
    r.only(set(names))
    return LimitsConfig(**{n: r.integer(n, getattr(d, n), minimum=1) for n in names})


def _keys(r: _Reader) -> KeysConfig:
    r.only({"org_public_key", "keyring", "instance_salt", "argon2_profile",
            "max_concurrent_argon2", "argon2_queue", "login_attempts_per_session_per_minute",
            "login_attempts_global_per_minute"})
    # login_attempts_global_per_minute is still read (an old amanat.toml must load) but no longer
    # used: a global limit let one client shut every source out; the fair queue replaced it.
    r.integer("login_attempts_global_per_minute", 60, minimum=1)
    paths = {n: r.path(n, None) for n in ("org_public_key", "keyring", "instance_salt")}
    missing = [n for n, p in paths.items() if p is None]
    if missing:
        raise ConfigError("[keys] needs " + ", ".join(missing))
    profile = r.string("argon2_profile", "production")
    if profile not in ARGON2_PROFILES:
        raise ConfigError(f"[keys] argon2_profile must be one of {sorted(ARGON2_PROFILES)}")
    d = KeysConfig(Path(), Path(), Path())
    return KeysConfig(
        org_public_key=paths["org_public_key"] or Path(),
        keyring=paths["keyring"] or Path(),
        instance_salt=paths["instance_salt"] or Path(),
        argon2_profile=profile,
        max_concurrent_argon2=r.integer("max_concurrent_argon2", d.max_concurrent_argon2,
                                        minimum=1),
        argon2_queue=r.integer("argon2_queue", d.argon2_queue, minimum=0),
        login_attempts_per_session_per_minute=r.integer(
            "login_attempts_per_session_per_minute", d.login_attempts_per_session_per_minute,
            minimum=1),
    )


def _transfer(r: _Reader) -> TransferConfig:
    r.only({"listen", "retention_days", "signing_key", "acknowledgements"})
    return TransferConfig(
        listen=r.listen("listen", None),
        retention_days=r.integer("retention_days", 0, minimum=0),
        signing_key=r.path("signing_key", None),
        acknowledgements=_acknowledgements(r),
    )


def _acknowledgements(r: _Reader) -> int | None:
    value = r.table.get("acknowledgements", "all")
    if value == "all":
        return None
    if type(value) is not int or value < 1:
        raise ConfigError(
            f'{r.where("acknowledgements")} must be "all" (every active investigator) or an '
            "integer >= 1"
        )
    return value


def _tor(r: _Reader) -> TorConfig:
    r.only({"mode", "control_port", "control_socket", "data_dir", "tor_binary",
            "control_password_file", "bootstrap_timeout", "onionbalance_frontend"})
    mode = r.string("mode", "none")
    if mode not in TOR_MODES:
        raise ConfigError(f"[tor] mode must be one of {', '.join(TOR_MODES)}; got {mode!r}")
    port = r.integer("control_port", 0, minimum=0)
    return TorConfig(
        mode=mode,
        control_port=port or None,
        control_socket=r.path("control_socket", None),
        data_dir=r.path("data_dir", None),
        tor_binary=r.string("tor_binary", "tor"),
        control_password_file=r.path("control_password_file", None),
        bootstrap_timeout=r.integer("bootstrap_timeout", 180, minimum=1),
        onionbalance_frontend=_frontend(r),
    )


def _frontend(r: _Reader) -> str | None:
    value = r.string("onionbalance_frontend", "")
    if not value:
        return None
    try:
        return normalize_address(value)
    except ValueError:
        raise ConfigError(f"{r.where('onionbalance_frontend')} must be a v3 onion address "
                          f"(56 characters, then .onion); got {value!r}") from None


def _i18n(r: _Reader) -> I18nConfig:
    r.only({"default_locale", "questionnaire"})
    locale = r.string("default_locale", "en")
    if locale not in LOCALES:
        raise ConfigError(f"[i18n] default_locale must be one of {', '.join(LOCALES)}")
    return I18nConfig(default_locale=locale, questionnaire=r.path("questionnaire", None))


def _check_limits(limits: LimitsConfig) -> None:
    if limits.max_file_bytes > limits.max_submission_bytes:
        raise ConfigError("[limits] max_file_bytes cannot exceed max_submission_bytes")


# --- typed access to one TOML table ------------------------------------------------------------


class _Reader:
    """Typed getters over one TOML table that name the offending key in every error."""

    def __init__(self, table: dict[str, Any], name: str, base_dir: Path) -> None:
        self.table, self.name, self.base_dir = table, name, base_dir

    def where(self, key: str) -> str:
        return f"[{self.name}] {key}" if self.name else key

    def only(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.table) - allowed)
        if unknown:
            raise ConfigError(f"unknown setting(s) {', '.join(self.where(k) for k in unknown)}")

    def section(self, key: str) -> _Reader:
        value = self.table.get(key, {})
        if not isinstance(value, dict):
            raise ConfigError(f"[{key}] must be a table")
        return _Reader(value, key, self.base_dir)

    def string(self, key: str, default: str) -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str):
            raise ConfigError(f"{self.where(key)} must be a string")
        return value

    def localized(self, key: str, default: Localized) -> Localized:
        """A string (the same in every language) or a table of one string per locale."""
        value = self.table.get(key)
        if value is None:
            return default
        if isinstance(value, str):
            return Localized({FALLBACK_LOCALE: value})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ConfigError(f"{self.where(key)} must be a string or a table of strings per "
                              f"locale ({', '.join(LOCALES)})")
        unknown = sorted(set(value) - set(LOCALES))
        if unknown:
            raise ConfigError(f"{self.where(key)}: unknown locale(s) {', '.join(unknown)}; "
                              f"use {', '.join(LOCALES)}")
        return Localized(dict(value))

    def integer(self, key: str, default: int, minimum: int) -> int:
        value = self.table.get(key, default)
        if type(value) is not int or value < minimum:
            raise ConfigError(f"{self.where(key)} must be an integer >= {minimum}")
        return value

    def path(self, key: str, default: Path | None) -> Path | None:
        if key not in self.table:
            return default
        return _resolve(self.base_dir, self.string(key, ""))

    def listen(self, key: str, default: Listen | None) -> Listen | None:
        if key not in self.table:
            return default
        return parse_listen(self.string(key, ""), self.where(key), self.base_dir)


def _resolve(base_dir: Path, raw: str) -> Path:
    if not raw:
        raise ConfigError("an empty path is not allowed")
    path = Path(raw).expanduser()
    return path if path.is_absolute() else (base_dir / path)
