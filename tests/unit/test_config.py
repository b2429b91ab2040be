"""Tests for gbplatform.app.config: defaults, file, environment, errors, to_toml."""

import dataclasses
import tomllib
from pathlib import Path

import pytest

from gbplatform import __version__
from gbplatform.app.config import (
    Config,
    ConfigError,
    bool_word,
    config_reference,
    env_var_name,
    load_config,
)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "gbplatform.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def error_of(path: str | None, env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, env)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- defaults -----------------------------------------------------------------


def test_defaults() -> None:
    config = load_config(None, {})
    assert config == Config()
    sip = config.sip
    assert sip.id == "34020000002000000001"
    assert sip.domain == "3402000000"
    assert sip.password == "12345678"
    assert (sip.host, sip.port, sip.external_ip) == ("0.0.0.0", 5060, "")
    assert sip.transports == ("udp", "tcp")
    assert sip.register_policy == "password"
    assert sip.strict_id is True
    assert (sip.register_expires_min, sip.register_expires_max) == (60, 3600)
    assert (sip.keepalive_interval, sip.keepalive_count) == (60, 3)
    assert sip.nonce_ttl == 300
    assert sip.digest_algorithms == ("MD5",)
    assert sip.date_header is True
    assert sip.trace_size == 200
    assert (sip.query_timeout, sip.catalog_timeout) == (10.0, 30.0)
    assert sip.user_agent == f"gbplatform/{__version__}"
    assert (config.http.host, config.http.port) == ("0.0.0.0", 8080)
    assert config.api.token == ""
    assert (config.database.url, config.database.pool_size) == ("", 4)
    assert config.storage.data_dir == "./data"
    assert (config.log.level, config.log.format) == ("info", "text")


def test_sections_are_frozen() -> None:
    config = load_config(None, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.sip.port = 1  # type: ignore[misc]


def test_database_url_resolution() -> None:
    assert load_config(None, {}).database_url == "sqlite:///./data/gbplatform.db"
    config = load_config(None, {"GBP_STORAGE_DATA_DIR": "/var/lib/gbp"})
    assert config.database_url == "sqlite:////var/lib/gbp/gbplatform.db"
    assert config.api_token_path == "/var/lib/gbp/api_token"
    pg = load_config(None, {"GBP_DATABASE_URL": "postgresql://u:p@db/gbp"})
    assert pg.database_url == "postgresql+psycopg://u:p@db/gbp"
    explicit = load_config(None, {"GBP_DATABASE_URL": "postgresql+psycopg://db/gbp"})
    assert explicit.database_url == "postgresql+psycopg://db/gbp"


@pytest.mark.parametrize(
    ("host", "external_ip", "advertised"),
    [
        ("0.0.0.0", "", "127.0.0.1"),
        ("::", "", "::1"),
        ("192.168.1.10", "", "192.168.1.10"),
        ("0.0.0.0", "203.0.113.5", "203.0.113.5"),
    ],
)
def test_advertised_ip(host: str, external_ip: str, advertised: str) -> None:
    config = load_config(None, {"GBP_SIP_HOST": host, "GBP_SIP_EXTERNAL_IP": external_ip})
    assert config.sip.advertised_ip == advertised


# -- file and environment -----------------------------------------------------


def test_toml_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[sip]
id = "11010000002000000001"
domain = "1101000000"
port = 15060
transports = ["UDP"]
digest_algorithms = ["sha-256", "MD5"]
strict_id = "no"
query_timeout = 5
register_policy = "pre_added"

[http]
port = 18080

[log]
level = "WARNING"
format = "json"
""",
    )
    config = load_config(path, {})
    assert config.sip.id == "11010000002000000001"
    assert config.sip.domain == "1101000000"
    assert config.sip.port == 15060
    assert config.sip.transports == ("udp",)
    assert config.sip.digest_algorithms == ("SHA-256", "MD5")
    assert config.sip.strict_id is False
    assert config.sip.query_timeout == 5.0
    assert isinstance(config.sip.query_timeout, float)
    assert config.sip.register_policy == "pre_added"
    assert config.http.port == 18080
    assert (config.log.level, config.log.format) == ("warn", "json")
    # Untouched keys keep their defaults.
    assert config.sip.password == "12345678"


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[sip]\nport = 15060\n[http]\nport = 18080\n")
    env = {
        "GBP_SIP_PORT": "5062",
        "GBP_STORAGE_DATA_DIR": "/srv/gbp",
        "GBP_DATABASE_URL": "sqlite:////tmp/x.db",
        "GBP_SIP_TRANSPORTS": "tcp, udp",
        "GBP_SIP_REGISTER_EXPIRES_MAX": "7200",
        "GBP_SIP_CATALOG_TIMEOUT": "12.5",
        "GBP_API_TOKEN": "s3cret",
        "PATH": "/usr/bin",
    }
    config = load_config(path, env)
    assert config.sip.port == 5062
    assert config.http.port == 18080
    assert config.storage.data_dir == "/srv/gbp"
    assert config.database_url == "sqlite:////tmp/x.db"
    assert config.sip.transports == ("tcp", "udp")
    assert config.sip.register_expires_max == 7200
    assert config.sip.catalog_timeout == 12.5
    assert config.api.token == "s3cret"


@pytest.mark.parametrize(
    ("word", "value"),
    [("true", True), ("FALSE", False), ("1", True), ("0", False), ("yes", True), ("No", False)],
)
def test_env_booleans(word: str, value: bool) -> None:
    assert load_config(None, {"GBP_SIP_DATE_HEADER": word}).sip.date_header is value


def test_toml_boolean_words(tmp_path: Path) -> None:
    path = write(tmp_path, '[sip]\nstrict_id = 0\ndate_header = "yes"\n')
    config = load_config(path, {})
    assert (config.sip.strict_id, config.sip.date_header) == (False, True)


def test_unrelated_gbp_variables_are_ignored() -> None:
    config = load_config(None, {"GBP_CONFIG": "/etc/gbp.toml", "GBP_TEST_PG": "x"})
    assert config == Config()


def test_empty_password_is_allowed() -> None:
    assert load_config(None, {"GBP_SIP_PASSWORD": ""}).sip.password == ""


def test_gop_cache_bytes(tmp_path: Path) -> None:
    assert Config().media.gop_cache_bytes == 16 * 1024 * 1024
    assert load_config(None, {"GBP_MEDIA_GOP_CACHE_BYTES": "0"}).media.gop_cache_bytes == 0  # off
    path = write(tmp_path, "[media]\ngop_cache_bytes = 4194304\n")
    assert load_config(path, {}).media.gop_cache_bytes == 4 * 1024 * 1024
    assert error_of(None, {"GBP_MEDIA_GOP_CACHE_BYTES": "-1"}) == (
        "media.gop_cache_bytes: expected an integer >= 0, got '-1' (from GBP_MEDIA_GOP_CACHE_BYTES)")


# -- errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GBP_SIP_PORT": "abc"},
         "sip.port: expected an integer 1-65535, got 'abc' (from GBP_SIP_PORT)"),
        ({"GBP_SIP_PORT": "0"},
         "sip.port: expected an integer 1-65535, got '0' (from GBP_SIP_PORT)"),
        ({"GBP_HTTP_PORT": "65536"},
         "http.port: expected an integer 1-65535, got '65536' (from GBP_HTTP_PORT)"),
        ({"GBP_SIP_ID": "3402000000200000001"},
         "sip.id: expected a 20-digit GB/T 28181 ID, got '3402000000200000001' (from GBP_SIP_ID)"),
        ({"GBP_SIP_ID": "3402000000200000000a"},
         "sip.id: expected a 20-digit GB/T 28181 ID, got '3402000000200000000a' (from GBP_SIP_ID)"),
        ({"GBP_SIP_DOMAIN": "34020"},
         "sip.domain: expected a 10-digit SIP domain, got '34020' (from GBP_SIP_DOMAIN)"),
        ({"GBP_SIP_HOST": "localhost"},
         "sip.host: expected an IP address, got 'localhost' (from GBP_SIP_HOST)"),
        ({"GBP_SIP_EXTERNAL_IP": "1.2.3"},
         "sip.external_ip: expected an IP address or empty, got '1.2.3' (from GBP_SIP_EXTERNAL_IP)"),
        ({"GBP_SIP_STRICT_ID": "maybe"},
         "sip.strict_id: expected a boolean (true/false/1/0/yes/no), got 'maybe' "
         "(from GBP_SIP_STRICT_ID)"),
        ({"GBP_SIP_TRANSPORTS": "udp,sctp"},
         "sip.transports: expected a non-empty list of \"udp\", \"tcp\", got 'udp,sctp' "
         "(from GBP_SIP_TRANSPORTS)"),
        ({"GBP_SIP_TRANSPORTS": ""},
         "sip.transports: expected a non-empty list of \"udp\", \"tcp\", got '' "
         "(from GBP_SIP_TRANSPORTS)"),
        ({"GBP_SIP_DIGEST_ALGORITHMS": "MD5-sess"},
         "sip.digest_algorithms: expected a non-empty list of \"MD5\", \"SHA-256\", got "
         "'MD5-sess' (from GBP_SIP_DIGEST_ALGORITHMS)"),
        ({"GBP_SIP_REGISTER_POLICY": "none"},
         "sip.register_policy: expected one of \"password\", \"pre_added\", \"open\", got "
         "'none' (from GBP_SIP_REGISTER_POLICY)"),
        ({"GBP_SIP_KEEPALIVE_COUNT": "0"},
         "sip.keepalive_count: expected an integer >= 1, got '0' (from GBP_SIP_KEEPALIVE_COUNT)"),
        ({"GBP_SIP_TRACE_SIZE": "-1"},
         "sip.trace_size: expected an integer >= 0, got '-1' (from GBP_SIP_TRACE_SIZE)"),
        ({"GBP_SIP_QUERY_TIMEOUT": "nan"},
         "sip.query_timeout: expected a number > 0, got 'nan' (from GBP_SIP_QUERY_TIMEOUT)"),
        ({"GBP_SIP_QUERY_TIMEOUT": "0"},
         "sip.query_timeout: expected a number > 0, got '0' (from GBP_SIP_QUERY_TIMEOUT)"),
        ({"GBP_SIP_USER_AGENT": "x\r\nVia: evil"},
         "sip.user_agent: expected a non-empty single-line string, got 'x\\r\\nVia: evil' "
         "(from GBP_SIP_USER_AGENT)"),
        ({"GBP_DATABASE_URL": "mysql://db/gbp"},
         "database.url: expected empty, \"sqlite:///...\" or \"postgresql://...\", got "
         "'mysql://db/gbp' (from GBP_DATABASE_URL)"),
        ({"GBP_DATABASE_POOL_SIZE": "1.5"},
         "database.pool_size: expected an integer >= 1, got '1.5' (from GBP_DATABASE_POOL_SIZE)"),
        ({"GBP_STORAGE_DATA_DIR": " "},
         "storage.data_dir: expected a non-empty path, got ' ' (from GBP_STORAGE_DATA_DIR)"),
        ({"GBP_LOG_LEVEL": "verbose"},
         "log.level: expected one of \"debug\", \"info\", \"warn\", \"error\", \"critical\", "
         "got 'verbose' (from GBP_LOG_LEVEL)"),
        ({"GBP_LOG_FORMAT": "xml"},
         "log.format: expected one of \"text\", \"json\", got 'xml' (from GBP_LOG_FORMAT)"),
        ({"GBP_SIP_PROT": "5060"},
         "sip.prot: unknown key (from GBP_SIP_PROT); did you mean 'port'?"),
        ({"GBP_SIP_REGISTER_EXPIRES_MIN": "7200"},
         "sip.register_expires_min: expected an integer <= sip.register_expires_max (3600), "
         "got 7200 (from GBP_SIP_REGISTER_EXPIRES_MIN)"),
        ({"GBP_HTTP_PORT": "5060"},
         "http.port: 5060 is also the SIP TCP port (sip.port) on the same address "
         "(from GBP_HTTP_PORT)"),
    ],
)
def test_env_errors(env: dict[str, str], message: str) -> None:
    assert error_of(None, env) == message


def test_http_port_may_equal_sip_port_over_udp_only() -> None:
    config = load_config(None, {"GBP_HTTP_PORT": "5060", "GBP_SIP_TRANSPORTS": "udp"})
    assert config.http.port == config.sip.port == 5060


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[sip]\nport = \"5060\"\n",
         "sip.port: expected an integer 1-65535, got '5060' (from {path})"),
        ("[sip]\nport = true\n",
         "sip.port: expected an integer 1-65535, got True (from {path})"),
        ("[sip]\nport = 70000\n",
         "sip.port: expected an integer 1-65535, got 70000 (from {path})"),
        ("[sip]\ntransports = \"udp\"\n",
         "sip.transports: expected a non-empty list of \"udp\", \"tcp\", got 'udp' (from {path})"),
        ("[sip]\nid = 34020000002000000001\n",
         "sip.id: expected a 20-digit GB/T 28181 ID, got 34020000002000000001 (from {path})"),
        ("[sip]\nstrict_id = 2\n",
         "sip.strict_id: expected a boolean (true/false/1/0/yes/no), got 2 (from {path})"),
        ("[sip]\nquery_timeout = \"10\"\n",
         "sip.query_timeout: expected a number > 0, got '10' (from {path})"),
        ("[sip]\nprot = 5060\n",
         "sip.prot: unknown key (from {path}); did you mean 'port'?"),
        ("[sip]\nfrobnicate = 1\n",
         "sip.frobnicate: unknown key (from {path})"),
        ("[spi]\nport = 5060\n",
         "spi: unknown section (from {path}); did you mean 'sip'?"),
        ("[cluster]\nnodes = 3\n",
         "cluster: unknown section (from {path})"),
        ("sip = 5\n",
         "sip: expected a table, got 5 (from {path})"),
        ("[sip.extra]\nx = 1\n",
         "sip.extra: unknown key (from {path}); did you mean 'external_ip'?"),
    ],
)
def test_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    assert error_of(path, {}) == message.format(path=path)


def test_invalid_toml_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[sip\nport = 1\n")
    message = error_of(path, {})
    assert message.startswith(f"{path}: invalid TOML: ")


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.toml")
    assert error_of(path, {}) == f"{path}: cannot read config file: No such file or directory"


def test_env_error_wins_over_valid_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[sip]\nport = 5070\n")
    assert error_of(path, {"GBP_SIP_PORT": "x"}) == (
        "sip.port: expected an integer 1-65535, got 'x' (from GBP_SIP_PORT)"
    )


# -- to_toml and the reference ------------------------------------------------


def test_to_toml_masks_secrets() -> None:
    config = load_config(
        None,
        {"GBP_API_TOKEN": "tok", "GBP_DATABASE_URL": "postgresql://gbp:pw@db:5432/gbp"},
    )
    data = tomllib.loads(config.to_toml())
    assert data["sip"]["password"] == "***"
    assert data["api"]["token"] == "***"
    assert data["database"]["url"] == "postgresql://gbp:***@db:5432/gbp"
    shown = tomllib.loads(config.to_toml(show_secrets=True))
    assert shown["sip"]["password"] == "12345678"
    assert shown["api"]["token"] == "tok"
    assert shown["database"]["url"] == "postgresql://gbp:pw@db:5432/gbp"


def test_to_toml_leaves_empty_secrets_empty() -> None:
    data = tomllib.loads(load_config(None, {"GBP_SIP_PASSWORD": ""}).to_toml())
    assert data["sip"]["password"] == ""
    assert data["api"]["token"] == ""


def test_to_toml_round_trip(tmp_path: Path) -> None:
    env = {
        "GBP_SIP_PASSWORD": 'tricky "pass"\\word\t\x7f',
        "GBP_SIP_USER_AGENT": "IPC 摄像机/1.0",
        "GBP_SIP_TRANSPORTS": "tcp",
        "GBP_SIP_DIGEST_ALGORITHMS": "SHA-256,MD5",
        "GBP_SIP_STRICT_ID": "no",
        "GBP_SIP_QUERY_TIMEOUT": "2.5",
        "GBP_SIP_EXTERNAL_IP": "2001:db8::1",
        "GBP_HTTP_PORT": "9000",
        "GBP_LOG_FORMAT": "json",
    }
    config = load_config(None, env)
    path = write(tmp_path, config.to_toml(show_secrets=True))
    assert load_config(path, {}) == config


def test_to_toml_of_defaults_round_trips(tmp_path: Path) -> None:
    config = load_config(None, {})
    path = write(tmp_path, config.to_toml(show_secrets=True))
    assert load_config(path, {}) == config


def test_config_reference_covers_every_field() -> None:
    rows = config_reference()
    keys = [key for key, _, _, _ in rows]
    expected = [
        f"{section.name}.{f.name}"
        for section in dataclasses.fields(Config)
        for f in dataclasses.fields(getattr(Config(), section.name))
    ]
    assert keys == expected
    by_key = {key: (kind, default, doc) for key, kind, default, doc in rows}
    assert by_key["sip.port"][:2] == ("integer", "5060")
    assert by_key["sip.transports"][:2] == ("list of strings", '["udp", "tcp"]')
    assert by_key["sip.strict_id"][:2] == ("boolean", "true")
    assert by_key["sip.query_timeout"][:2] == ("float", "10.0")
    assert by_key["storage.data_dir"][:2] == ("string", '"./data"')
    assert all(doc for _, _, _, doc in rows)


def test_env_var_name() -> None:
    assert env_var_name("sip.register_expires_max") == "GBP_SIP_REGISTER_EXPIRES_MAX"
    assert env_var_name("storage.data_dir") == "GBP_STORAGE_DATA_DIR"


@pytest.mark.parametrize(
    ("text", "flag"),
    [("true", True), (" YES ", True), ("1", True), ("false", False), ("No", False), ("0", False),
     ("", None), ("on", None), ("2", None)],
)
def test_bool_word(text: str, flag: bool | None) -> None:
    # One reading of booleans for the config file, its environment overrides and GBP_PYOPENSSL.
    assert bool_word(text) is flag
