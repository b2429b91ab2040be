"""Tests for gbplatform.app.cli, driven through main([...]); the reactor never runs for real."""

import argparse
import io
import json
import logging
import signal
import subprocess
import sys
import tomllib
import types
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, globalLogPublisher

from gbplatform import __version__
from gbplatform.app import cli, logs
from gbplatform.app.config import Config, ConfigError, LogConfig, load_config


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("GBP_"):
            monkeypatch.delenv(name)


@pytest.fixture
def fake_migrate(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    module = types.ModuleType("gbplatform.db.migrate")
    module.upgrade = lambda url, revision: calls.append((url, revision))  # type: ignore[attr-defined]
    module.upgrade_in_subprocess = lambda url, revision: calls.append((url, revision))  # type: ignore[attr-defined]
    module.MigrationError = FakeMigrationError  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gbplatform.db.migrate", module)
    return calls


class FakeMigrationError(RuntimeError):
    pass


# -- --version, usage ----------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"gbplatform {__version__}\n"


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: gbplatform" in capsys.readouterr().err


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frobnicate"]) == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


# -- config --------------------------------------------------------------------------


def test_config_prints_effective_toml(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config"]) == 0
    out = capsys.readouterr().out
    data = tomllib.loads(out)
    assert data["sip"]["port"] == 5060
    assert data["sip"]["password"] == "***"
    assert data["http"]["port"] == 8080


def test_config_show_secrets_and_env(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GBP_SIP_PORT", "5062")
    monkeypatch.setenv("GBP_API_TOKEN", "tok")
    assert cli.main(["config", "--show-secrets"]) == 0
    data = tomllib.loads(capsys.readouterr().out)
    assert data["sip"]["port"] == 5062
    assert data["sip"]["password"] == "12345678"
    assert data["api"]["token"] == "tok"


def test_config_file_option_and_env_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a = tmp_path / "a.toml"
    a.write_text("[http]\nport = 9001\n")
    b = tmp_path / "b.toml"
    b.write_text("[http]\nport = 9002\n")
    assert cli.main(["config", "--config", str(a)]) == 0
    assert tomllib.loads(capsys.readouterr().out)["http"]["port"] == 9001
    monkeypatch.setenv("GBP_CONFIG", str(b))
    assert cli.main(["config"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["http"]["port"] == 9002
    # An explicit --config wins over $GBP_CONFIG.
    assert cli.main(["config", "--config", str(a)]) == 0
    assert tomllib.loads(capsys.readouterr().out)["http"]["port"] == 9001


def test_config_output_loads_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "--show-secrets"]) == 0
    path = tmp_path / "effective.toml"
    path.write_text(capsys.readouterr().out)
    assert load_config(str(path), {}) == Config()


def test_config_env_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GBP_SIP_PORT", "abc")
    assert cli.main(["config"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "gbplatform: error: sip.port: expected an integer 1-65535, got 'abc' (from GBP_SIP_PORT)\n"
    )


def test_config_file_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[sip]\nportt = 1\n")
    assert cli.main(["config", "--config", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"gbplatform: error: sip.portt: unknown key (from {path}); did you mean 'port'?\n"
    )


def test_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "missing.toml"
    assert cli.main(["config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gbplatform: error: {path}: cannot read config file")
    assert err.count("\n") == 1


# -- migrate -------------------------------------------------------------------------


def test_migrate(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fake_migrate: list[tuple[str, str]],
) -> None:
    data_dir = tmp_path / "state"
    monkeypatch.setenv("GBP_STORAGE_DATA_DIR", str(data_dir))
    assert cli.main(["migrate"]) == 0
    assert fake_migrate == [(f"sqlite:///{data_dir}/gbplatform.db", "head")]
    assert data_dir.is_dir()
    assert "migrated to head" in capsys.readouterr().out


def test_migrate_revision_and_config_error(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    fake_migrate: list[tuple[str, str]],
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("GBP_DATABASE_URL", "postgresql://db/gbp")
    monkeypatch.setenv("GBP_STORAGE_DATA_DIR", str(tmp_path))
    assert cli.main(["migrate", "--revision", "0001"]) == 0
    assert fake_migrate == [("postgresql+psycopg://db/gbp", "0001")]
    monkeypatch.setenv("GBP_DATABASE_POOL_SIZE", "zero")
    assert cli.main(["migrate"]) == 2
    assert capsys.readouterr().err.startswith("gbplatform: error: database.pool_size:")
    assert len(fake_migrate) == 1


# -- run (serve with an in-memory reactor) ------------------------------------------------


class FakeService:
    def __init__(self) -> None:
        self.events: list[str] = []

    def startService(self) -> None:  # noqa: N802 - Twisted's IService name
        self.events.append("start")

    def stopService(self) -> None:  # noqa: N802
        self.events.append("stop")


def test_serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_migrate: list[tuple[str, str]]
) -> None:
    service = FakeService()
    made: list[tuple[Config, Any]] = []

    def make_service(config: Config, reactor: Any) -> FakeService:
        made.append((config, reactor))
        return service

    module = types.ModuleType("gbplatform.app.service")
    module.make_service = make_service  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gbplatform.app.service", module)
    config = load_config(None, {"GBP_STORAGE_DATA_DIR": str(tmp_path)})
    reactor = MemoryReactorClock()  # type: ignore[no-untyped-call]
    signals_for: list[Any] = []

    assert cli.serve(config, reactor, install_signals=signals_for.append) == 0

    assert fake_migrate == [(config.database_url, "head")]
    assert made == [(config, reactor)]
    assert service.events == ["start"]
    assert reactor.hasRun and signals_for == [reactor]
    (trigger, args, kwargs), = reactor.triggers["before"]["shutdown"]
    trigger(*args, **kwargs)
    assert service.events == ["start", "stop"]


def test_serve_does_not_start_when_the_migration_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_migrate: list[tuple[str, str]]
) -> None:
    def fail(url: str, revision: str) -> None:
        raise FakeMigrationError("database migration to head failed (exit 1):\nno such database")

    monkeypatch.setattr(sys.modules["gbplatform.db.migrate"], "upgrade_in_subprocess", fail)
    module = types.ModuleType("gbplatform.app.service")
    module.make_service = lambda config, reactor: pytest.fail("built a service without a schema")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gbplatform.app.service", module)
    config = load_config(None, {"GBP_STORAGE_DATA_DIR": str(tmp_path)})
    reactor = MemoryReactorClock()  # type: ignore[no-untyped-call]
    seen: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") is not None and event["log_level"].name == "critical":
            seen.append(event["error"])

    globalLogPublisher.addObserver(observe)
    try:
        assert cli.serve(config, reactor, install_signals=lambda r: None) == 1
    finally:
        globalLogPublisher.removeObserver(observe)
    assert not reactor.hasRun
    assert seen and "no such database" in seen[0]


def test_signal_handlers_stop_reactor_once(monkeypatch: pytest.MonkeyPatch) -> None:
    installed: dict[int, Any] = {}
    monkeypatch.setattr(signal, "signal", lambda signum, h: installed.__setitem__(signum, h))

    class Reactor:
        def __init__(self) -> None:
            self.calls: list[Any] = []

        def stop(self) -> None:
            raise AssertionError("must go through callFromThread")

        def callFromThread(self, f: Any) -> None:  # noqa: N802 - Twisted's name
            self.calls.append(f)

    reactor = Reactor()
    cli._install_signal_handlers(reactor)
    assert set(installed) == {signal.SIGTERM, signal.SIGINT}
    installed[signal.SIGTERM](signal.SIGTERM, None)
    installed[signal.SIGINT](signal.SIGINT, None)
    assert reactor.calls == [reactor.stop]


def test_run_keeps_pyopenssl_out_unless_asked() -> None:
    saved = {name: sys.modules.pop(name) for name in list(sys.modules)
             if name == "OpenSSL" or name.startswith("OpenSSL.")}
    try:
        for word in ("1", "true", "YES"):
            assert cli.keep_pyopenssl_out({"GBP_PYOPENSSL": word}) is False
            assert "OpenSSL" not in sys.modules
        with pytest.raises(ConfigError, match="GBP_PYOPENSSL: expected true or false, got 'maybe'"):
            cli.keep_pyopenssl_out({"GBP_PYOPENSSL": "maybe"})
        assert cli.keep_pyopenssl_out({"GBP_PYOPENSSL": "0"}) is True
        with pytest.raises(ImportError):
            import OpenSSL  # noqa: F401 - what Twisted's tcp module tries, and catches
        assert cli.keep_pyopenssl_out({}) is False  # already kept out
    finally:
        sys.modules.pop("OpenSSL", None)
        sys.modules.update(saved)


def test_library_imports_keep_pyopenssl() -> None:
    """Only ``gbplatform run`` keeps pyOpenSSL out; loaded already, nothing is blocked."""
    import OpenSSL

    assert cli.keep_pyopenssl_out({}) is False and sys.modules["OpenSSL"] is OpenSSL


# -- logging ----------------------------------------------------------------------------


def test_json_log_lines_with_level_filter() -> None:
    stream = io.StringIO()
    observer = logs.make_log_observer(LogConfig(level="info", format="json"), stream)
    log = Logger(namespace="gbplatform.devices.registrar", observer=observer)
    log.debug("hidden {x}", x=1)
    log.info("device {device_id} online", device_id="34020000001320000001", n=3, obj=object())
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "info"
    assert record["namespace"] == "gbplatform.devices.registrar"
    assert record["message"] == "device 34020000001320000001 online"
    assert record["device_id"] == "34020000001320000001"
    assert record["n"] == 3
    assert record["obj"].startswith("<object object")
    assert record["time"].endswith("+00:00")


def test_json_log_includes_traceback() -> None:
    stream = io.StringIO()
    log = Logger(observer=logs.make_log_observer(LogConfig(format="json"), stream))
    try:
        raise ValueError("boom")
    except ValueError:
        log.failure("handler failed")
    record = json.loads(stream.getvalue())
    assert record["level"] == "critical"
    assert "ValueError: boom" in record["traceback"]


def test_text_log_and_level() -> None:
    stream = io.StringIO()
    log = Logger(observer=logs.make_log_observer(LogConfig(level="warn"), stream))
    log.info("quiet")
    log.warn("loud {what}", what="noise")
    assert "quiet" not in stream.getvalue()
    assert "loud noise" in stream.getvalue()


def test_stdlib_records_reach_twisted_logger() -> None:
    events: list[dict[str, Any]] = []
    observer: Any = events.append
    globalLogPublisher.addObserver(observer)
    logger = logging.getLogger("sip.test_cli_bridge")
    handler = logs._StdlibToTwisted()
    logger.addHandler(handler)
    try:
        logger.warning("dropped %d bytes", 5)
    finally:
        logger.removeHandler(handler)
        globalLogPublisher.removeObserver(observer)
    (event,) = [e for e in events if e.get("log_namespace") == "sip.test_cli_bridge"]
    assert event["log_level"].name == "warn"
    assert event["text"] == "dropped 5 bytes"


# -- simulate ----------------------------------------------------------------------------


@pytest.fixture
def fake_simulator(monkeypatch: pytest.MonkeyPatch) -> list[argparse.Namespace]:
    seen: list[argparse.Namespace] = []
    module = types.ModuleType("gbplatform.simulator.device")

    def main(args: argparse.Namespace) -> int:
        seen.append(args)
        return 0

    module.main = main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gbplatform.simulator.device", module)
    return seen


def test_simulate_defaults(fake_simulator: list[argparse.Namespace]) -> None:
    assert cli.main(["simulate"]) == 0
    (args,) = fake_simulator
    assert args.server == "127.0.0.1:5060"
    assert args.transport == "udp"
    assert (args.devices, args.channels) == (1, 4)
    assert args.first_id == "34020000001320000001"
    assert args.password == "12345678"
    assert (args.domain, args.server_id) == ("3402000000", "34020000002000000001")
    assert (args.local_host, args.local_port_base) == ("127.0.0.1", 0)
    assert (args.keepalive_interval, args.expires) == (60, 3600)
    assert args.catalog_per_message == 2
    assert (args.vendor, args.charset) == ("generic", "GB2312")
    assert args.duration == 0.0
    assert args.device_ids == ["34020000001320000001"]


def test_simulate_options(fake_simulator: list[argparse.Namespace]) -> None:
    argv = [
        "simulate", "--server", "10.0.0.5:15060", "--transport", "tcp", "--devices", "3",
        "--channels", "0", "--first-id", "34020000001329999998", "--password", "pw",
        "--vendor", "hikvision", "--charset", "UTF-8", "--name-prefix", "Gate",
        "--duration", "30", "--local-port-base", "20000", "--catalog-per-message", "1",
    ]
    assert cli.main(argv) == 2  # 9999998 + 2 needs an eighth digit
    argv[argv.index("34020000001329999998")] = "34020000001320000009"
    assert cli.main(argv) == 0
    (args,) = fake_simulator
    assert args.device_ids == [
        "34020000001320000009", "34020000001320000010", "34020000001320000011",
    ]
    assert (args.transport, args.vendor, args.charset) == ("tcp", "hikvision", "UTF-8")
    assert (args.name_prefix, args.duration, args.local_port_base) == ("Gate", 30.0, 20000)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--first-id", "123"], "expected a 20-digit GB/T 28181 ID"),
        (["--server", "localhost"], "expected HOST:PORT"),
        (["--server", "host:0"], "expected HOST:PORT"),
        (["--devices", "0"], "expected an integer >= 1"),
        (["--transport", "tls"], "invalid choice"),
        (["--domain", "34020"], "expected a 10-digit SIP domain"),
        (["--duration", "-1"], "expected a number >= 0"),
    ],
)
def test_simulate_bad_options(
    argv: list[str],
    fragment: str,
    capsys: pytest.CaptureFixture[str],
    fake_simulator: list[argparse.Namespace],
) -> None:
    assert cli.main(["simulate", *argv]) == 2
    assert fragment in capsys.readouterr().err
    assert fake_simulator == []


# What `gbplatform run` imports, in a fresh interpreter: the CLI, the configuration
# and the whole service graph (make_service), but never the device simulator.
RUN_PATH_IMPORTS = """
import sys
from twisted.internet.testing import MemoryReactorClock
from gbplatform.app import cli
from gbplatform.app.config import load_config
from gbplatform.app.service import make_service


class Reactor(MemoryReactorClock):
    def listenUDP(self, *args, **kwargs):  # looked up while building; the service is not started
        raise AssertionError("not started")


assert cli.build_parser().parse_args(["run"]).command == "run"
top = make_service(load_config(None, {"GBP_STORAGE_DATA_DIR": sys.argv[1]}), Reactor())
top.platform.db.dispose()
loaded = sorted(name for name in sys.modules if name.startswith("gbplatform.simulator"))
assert not loaded, loaded
"""


def test_run_does_not_import_the_simulator(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", RUN_PATH_IMPORTS, str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr


def test_simulated_device_ids_overflow() -> None:
    assert cli.simulated_device_ids("34020000001329999999", 1) == ["34020000001329999999"]
    with pytest.raises(ValueError, match="leaves room for 1 devices, not 2"):
        cli.simulated_device_ids("34020000001329999999", 2)
