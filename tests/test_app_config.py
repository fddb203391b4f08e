"""The config file: defaults, relative paths, refusals (public addresses, typos, bad values)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dropbox.config import GIB, load_config, parse_config, parse_listen
from keys.codename import CHEAPEST, PRODUCTION
from keys.errors import ConfigError

MINIMAL = """
[storage]
data_dir = "data"
[keys]
org_public_key = "org/org.pub"
keyring = "org/keyring.json"
instance_salt = "salt"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "amanat.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_config_gets_safe_defaults(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert str(config.server.listen) == "127.0.0.1:8080"
    assert config.storage.data_dir == tmp_path / "data"
    assert config.storage.database_url == f"sqlite+aiosqlite:///{tmp_path}/data/amanat.sqlite3"
    assert config.storage.ciphertext == "files"
    assert config.keys.keyring == tmp_path / "org" / "keyring.json"
    assert config.keys.profile == PRODUCTION
    assert config.limits.max_file_bytes == 2 * GIB
    assert config.transfer.retention_days == 0
    assert config.transfer.acknowledgements is None  # every active investigator
    assert config.tor.mode == "none"
    assert config.i18n.default_locale == "en"
    assert config.path == tmp_path / "amanat.toml"


def test_a_cluster_node_names_its_shared_key(tmp_path):
    alone = load_config(write(tmp_path, MINIMAL))
    assert alone.server.session_key_file is None
    assert alone.server.cluster_nodes == 1
    node = load_config(write(tmp_path, '[server]\nsession_key_file = "session.key"\n'
                             "cluster_nodes = 3\n" + MINIMAL))
    assert node.server.session_key_file == tmp_path / "session.key"
    assert node.server.cluster_nodes == 3


def test_config_is_frozen(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    with pytest.raises(AttributeError):
        config.limits.max_files = 5  # type: ignore[misc]


@pytest.mark.parametrize("address", ["0.0.0.0:8080", "192.168.1.4:80", "[::]:80",
                                     "10.0.0.1:1", "example.org:80"])
def test_public_addresses_are_refused_with_a_reason(tmp_path, address):
    with pytest.raises(ConfigError, match=r"127\.0\.0\.1|not an IP") as info:
        load_config(write(tmp_path, f'[server]\nlisten = "{address}"\n' + MINIMAL))
    if "IP" not in str(info.value):
        assert "Tor" in str(info.value)


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:0", "127.0.0.1:0"),
    ("127.0.0.2:9", "127.0.0.2:9"),
    ("[::1]:8080", "[::1]:8080"),
    ("localhost:80", "127.0.0.1:80"),
])
def test_loopback_addresses_are_accepted(tmp_path, text, expected):
    assert str(parse_listen(text, "listen", tmp_path)) == expected


def test_unix_socket_relative_to_config(tmp_path):
    listen = parse_listen("unix:run/amanat.sock", "listen", tmp_path)
    assert listen.unix_path == tmp_path / "run" / "amanat.sock"


BASE = {
    "storage": {"data_dir": "data"},
    "keys": {"org_public_key": "org.pub", "keyring": "keyring.json", "instance_salt": "salt"},
}


@pytest.mark.parametrize(("section", "values"), [
    ("server", {"lisen": "127.0.0.1:1"}),  # a typo is not silently ignored
    ("server", {"listen": "127.0.0.1"}),
    ("limits", {"max_files": "ten"}),
    ("limits", {"max_files": 0}),
    ("limits", {"max_file_bytes": 10, "max_submission_bytes": 5}),
    ("keys", {"argon2_profile": "fast"}),
    ("tor", {"mode": "sometimes"}),
    ("tor", {"onionbalance_frontend": "example.onion"}),
    ("tor", {"onionbalance_frontend": 56}),
    ("transfer", {"acknowledgements": 0}),
    ("transfer", {"acknowledgements": "most"}),
    ("transfer", {"acknowledgements": True}),
    ("transfer", {"acknowledgements": 1.5}),
    ("i18n", {"default_locale": "de"}),
    ("storage", {"ciphertext": "s3"}),
    ("storage", {"ciphertext": "database"}),  # needs PostgreSQL: SQLite keeps the folder
    ("storage", {"ciphertext": "database", "database_url": "sqlite+aiosqlite:///x.db"}),
    ("nonsense", {"x": 1}),
    ("server", {"cluster_nodes": 2}),  # nodes without a shared key log sources out
    ("server", {"cluster_nodes": 0, "session_key_file": "session.key"}),
    ("server", {"session_key_file": ""}),
])
def test_bad_settings_are_refused(tmp_path, section, values):
    data = {name: dict(table) for name, table in BASE.items()}
    data.setdefault(section, {}).update(values)
    assert parse_config(BASE, tmp_path)  # the base alone is fine
    with pytest.raises(ConfigError):
        parse_config(data, tmp_path)


def test_the_database_store_with_postgresql(tmp_path):
    data = {name: dict(table) for name, table in BASE.items()}
    data["storage"].update(ciphertext="database",
                           database_url="postgresql+asyncpg://amanat@/amanat?host=/run/pg")
    assert parse_config(data, tmp_path).storage.ciphertext == "database"


@pytest.mark.parametrize(("value", "expected"), [("all", None), (1, 1), (3, 3)])
def test_the_acknowledgement_policy(tmp_path, value, expected):
    data = {name: dict(table) for name, table in BASE.items()}
    data.setdefault("transfer", {})["acknowledgements"] = value
    assert parse_config(data, tmp_path).transfer.acknowledgements == expected


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[server\n"))
    with pytest.raises(ConfigError, match="data_dir"):
        load_config(write(tmp_path, "[keys]\n"))


def test_cheapest_profile_only_when_asked(tmp_path):
    text = MINIMAL.replace('instance_salt = "salt"', 'instance_salt = "salt"\n'
                           'argon2_profile = "cheapest"')
    assert load_config(write(tmp_path, text)).keys.profile == CHEAPEST


def test_instance_name_and_description_per_locale(tmp_path):
    old = load_config(write(tmp_path, '[server]\ninstance_name = "Drop"\n' + MINIMAL))
    assert {old.server.instance_name.text(c) for c in ("en", "fa_AF", "ar")} == {"Drop"}
    assert old.server.instance_description.text("ps") == ""
    config = load_config(write(tmp_path, MINIMAL + """
[server]
instance_name = { en = "Drop", fa = "صندوق", ps = "امانت" }
[server.instance_description]
en = "Run by us."
ar = "يديره فريقنا."
"""))
    names = config.server.instance_name
    assert [names.text(c) for c in ("en", "ps", "fa", "fa_AF", "ur")] == [
        "Drop", "امانت", "صندوق", "صندوق", "Drop"]  # fa_AF falls back to fa, ur to English
    assert config.server.instance_description.text("ar") == "يديره فريقنا."
    assert config.server.instance_description.text("fa_AF") == "Run by us."


@pytest.mark.parametrize(("value", "message"), [
    ('{ en = "A", de = "B" }', "unknown locale.*de"),
    ('{ en = 1 }', "string or a table"),
    ("3", "string or a table")])
def test_bad_per_locale_instance_names_are_refused(tmp_path, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, f"[server]\ninstance_name = {value}\n" + MINIMAL))


def test_onionbalance_frontend_reaches_onion_settings(tmp_path):
    frontend = "a" * 52 + "aaad"
    assert load_config(write(tmp_path, MINIMAL)).onion_settings().onionbalance_frontend is None
    config = load_config(write(tmp_path, MINIMAL + f'[tor]\nonionbalance_frontend = '
                                                   f'"{frontend.upper()}.onion"\n'))
    assert config.tor.onionbalance_frontend == frontend
    assert config.onion_settings().onionbalance_frontend == frontend
