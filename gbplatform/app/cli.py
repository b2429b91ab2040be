"""The ``gbplatform`` command: ``config``, ``migrate``, ``run`` and ``simulate``.

The reactor is imported only inside ``run`` (after installing epoll), and the
modules behind ``migrate``, ``run`` and ``simulate`` are imported lazily, so
``gbplatform config`` and ``--version`` work without touching the network
stack or the database. ``run`` also keeps pyOpenSSL out of the process
(``keep_pyopenssl_out``).
"""

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from twisted.logger import Logger

from gbplatform import __version__
from gbplatform.app.config import Config, ConfigError, bool_word, load_config
from gbplatform.app.logs import setup_logging
from gbplatform.app.reactor import install_reactor
from gbplatform.core.ids import is_domain, is_gb_id

__all__ = ["build_parser", "keep_pyopenssl_out", "main", "serve"]

log = Logger()

PROG = "gbplatform"
EXIT_USAGE = 2
CONFIG_ENV = "GBP_CONFIG"
PYOPENSSL_ENV = "GBP_PYOPENSSL"


# --------------------------------------------------------------------------
# Argument parsing
# --------------------------------------------------------------------------


_N = TypeVar("_N", int, float)


def _at_least(parse: Callable[[str], _N], what: str, minimum: int) -> Callable[[str], _N]:
    """An argparse type: ``parse`` the text and refuse it below ``minimum`` (or NaN)."""

    def check(text: str) -> _N:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not value >= minimum:
            raise argparse.ArgumentTypeError(f"expected {what} >= {minimum}, got {text.strip()}")
        return value

    return check


_positive_int = _at_least(int, "an integer", 1)
_non_negative_int = _at_least(int, "an integer", 0)
_non_negative_float = _at_least(float, "a number", 0)


def _gb_id(text: str) -> str:
    if not is_gb_id(text):
        raise argparse.ArgumentTypeError(f"expected a 20-digit GB/T 28181 ID, got {text!r}")
    return text


def _domain(text: str) -> str:
    if not is_domain(text):
        raise argparse.ArgumentTypeError(f"expected a 10-digit SIP domain, got {text!r}")
    return text


def _host_port(text: str) -> str:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return text


def simulated_device_ids(first_id: str, count: int) -> list[str]:
    """Device IDs for the simulator: ``first_id`` then +1 in the last 7 digits.

    The first 13 digits (civil code, industry, type; GB/T 28181-2016 Annex D)
    stay fixed; raises ValueError if the sequence would need an eighth digit.
    """
    head, seq = first_id[:13], int(first_id[13:])
    if seq + count - 1 > 9_999_999:
        raise ValueError(
            f"--first-id {first_id} leaves room for {10_000_000 - seq} devices, not {count}"
        )
    return [f"{head}{seq + i:07d}" for i in range(count)]


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="FILE", default=None,
        help=f"TOML configuration file (default: ${CONFIG_ENV}, else built-in defaults)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="GB/T 28181 video surveillance platform."
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("config", help="print the effective configuration as TOML")
    _add_config_option(p)
    p.add_argument("--show-secrets", action="store_true", help="do not mask passwords/tokens")

    p = sub.add_parser("migrate", help="apply database migrations")
    _add_config_option(p)
    p.add_argument("--revision", default="head", help="target revision (default: head)")

    p = sub.add_parser("run", help="run the platform")
    _add_config_option(p)

    p = sub.add_parser("simulate", help="simulate GB/T 28181 devices against a platform")
    p.add_argument("--server", type=_host_port, default="127.0.0.1:5060", metavar="HOST:PORT")
    p.add_argument("--transport", choices=("udp", "tcp"), default="udp")
    p.add_argument("--devices", type=_positive_int, default=1, metavar="N")
    p.add_argument("--channels", type=_non_negative_int, default=4, metavar="M",
                   help="channels (cameras) per device")
    p.add_argument("--first-id", type=_gb_id, default="34020000001320000001",
                   help="ID of the first device; the next ones add 1 to the last 7 digits")
    p.add_argument("--password", default="12345678", help="digest password")
    p.add_argument("--domain", type=_domain, default="3402000000", help="SIP domain / realm")
    p.add_argument("--server-id", type=_gb_id, default="34020000002000000001")
    p.add_argument("--local-host", default="127.0.0.1")
    p.add_argument("--local-port-base", type=_non_negative_int, default=0,
                   help="first local port, +1 per device (0 = ephemeral)")
    p.add_argument("--keepalive-interval", type=_positive_int, default=60, metavar="SECONDS")
    p.add_argument("--expires", type=_positive_int, default=3600, metavar="SECONDS")
    p.add_argument("--catalog-per-message", type=_positive_int, default=2, metavar="N",
                   help="catalog items per MESSAGE (GB/T 28181-2016 §A.2.6)")
    p.add_argument("--vendor", choices=("generic", "exosip", "hikvision", "pjsua", "gb2312_utf8"),
                   default="generic", help="vendor quirk set")
    p.add_argument("--charset", choices=("GB2312", "UTF-8"), default="GB2312",
                   help="MANSCDP body encoding")
    p.add_argument("--name-prefix", default="测试通道", help="prefix of channel names")
    p.add_argument("--duration", type=_non_negative_float, default=0.0, metavar="SECONDS",
                   help="stop after this long (0 = forever)")
    p.add_argument("--clip", choices=("capture", "h264", "h265"), default="capture",
                   help="media answered to INVITE: the bundled H.264 capture, or a test pattern "
                        "encoded at start (cached)")
    p.add_argument("--audio", choices=("g711a", "g711u", "none"), default="g711a",
                   help="audio of a generated --clip (the capture has its own)")
    p.add_argument("--payload", choices=("ps", "es"), default="ps",
                   help="RTP payload answered to INVITE: ps (MPEG-PS, GB/T 28181 Annex C) or es "
                        "(raw H.264/H.265, RFC 6184/7798, as 98 H264 / 99 H265; video only)")
    p.add_argument("--gb-version", choices=("2022", "2016"), default="2022",
                   help="GB/T 28181 edition spoken: announced in REGISTER (X-GB-Ver 3.0 / 2.0); a 2016 device "
                        "refuses the 2022 commands as 2016 firmware does")
    p.add_argument("--catalog-change-interval", type=_non_negative_float, default=0.0, metavar="SECONDS",
                   help="send a catalog change (a channel OFF, ON, an ADD, a DEL, one per interval) as NOTIFY "
                        "in the platform's Catalog subscription, else MESSAGE; 0 = only on SIGHUP")
    p.add_argument("--alarm-interval", type=_non_negative_float, default=0.0, metavar="SECONDS",
                   help="each device reports an alarm every SECONDS (0: never; SIGUSR2: one from every device now)")
    p.add_argument("--position-interval", type=_non_negative_float, default=0.0, metavar="SECONDS",
                   help="each device reports its mobile position every SECONDS (0: never)")
    p.add_argument("--iframe-spelling", choices=("any", "IFameCmd", "IFrameCmd"), default="any",
                   help="I-frame element the device knows (GB/T 28181 A.2.3.1.7 IFameCmd, or IFrameCmd); "
                        "the other spelling is answered ERROR")
    p.add_argument("--external-sender", default="", metavar="PATH",
                   help="answer INVITEs but let the process listening on this Unix SOCK_SEQPACKET socket "
                        "send the media (benchmarks/ps_sender.c; gbplatform/simulator/external.py)")
    return parser


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> Config:
    path = args.config or os.environ.get(CONFIG_ENV) or None
    return load_config(path, os.environ)


def _ensure_data_dir(config: Config) -> None:
    # SQLite does not create missing parent directories.
    os.makedirs(config.storage.data_dir, exist_ok=True)


def _migrate(config: Config, revision: str) -> None:
    from gbplatform.db.migrate import upgrade

    _ensure_data_dir(config)
    upgrade(config.database_url, revision)


def _migrate_in_child(config: Config) -> str | None:
    """Migrate to head in a child interpreter; the error, or None once migrated.

    Why a child: Alembic would otherwise stay loaded for the process's life
    (about 9 MiB, docs/performance.md "Memory").
    """
    from gbplatform.db.migrate import MigrationError, upgrade_in_subprocess

    _ensure_data_dir(config)
    try:
        upgrade_in_subprocess(config.database_url, "head")
    except MigrationError as e:
        return str(e)
    return None


def _cmd_config(args: argparse.Namespace) -> int:
    config = _load(args)
    sys.stdout.write(config.to_toml(show_secrets=args.show_secrets))
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    config = _load(args)
    _migrate(config, args.revision)
    print(f"{PROG}: database migrated to {args.revision}")
    return 0


def keep_pyopenssl_out(env: Mapping[str, str]) -> bool:
    """Make ``import OpenSSL`` fail in this process unless ``GBP_PYOPENSSL`` is true; True if it did.

    Why: importing Twisted's reactor imports ``twisted.internet.tcp``, which
    imports pyOpenSSL and cryptography to offer startTLS on every TCP
    connection: about 13 MiB of RSS (measured, docs/performance.md). The
    platform serves no TLS (HTTP API, SIP over UDP/TCP, RTSP; boto3 uses the
    stdlib ``ssl`` module). Twisted supports running without pyOpenSSL, which
    is Twisted without its ``tls`` extra: ``tcp``, ``posixbase`` and
    ``endpoints`` catch the ImportError and leave TLS out. A ``None`` entry in
    ``sys.modules`` is Python's documented way to make an import raise
    ImportError (Python Language Reference §5.3.1, "The module cache").

    Only ``gbplatform run`` calls this, before the reactor is imported:
    library imports and the tests see pyOpenSSL as installed, and
    ``twisted[tls]`` stays a dependency. ``GBP_PYOPENSSL=1`` turns it off, for
    code that needs TLS in the platform process. Nothing is blocked if
    pyOpenSSL is already loaded (nothing would be saved).
    """
    raw = env.get(PYOPENSSL_ENV, "")
    wanted = bool_word(raw) if raw.strip() else False
    if wanted is None:
        raise ConfigError(f"{PYOPENSSL_ENV}: expected true or false, got {raw!r}")
    if wanted:
        return False
    if "OpenSSL" in sys.modules:
        return False
    sys.modules["OpenSSL"] = None  # type: ignore[assignment]
    return True


def _cmd_run(args: argparse.Namespace) -> int:
    config = _load(args)
    setup_logging(config.log)
    keep_pyopenssl_out(os.environ)
    install_reactor()
    from twisted.internet import reactor

    return serve(config, reactor)


GC_YOUNG_THRESHOLD = 10_000


def tune_gc() -> None:
    """Keep the cyclic GC off the signalling path.

    Everything allocated at start (modules, the service graph) is moved to the
    permanent generation so collections never walk it again, and the young
    generation is collected every 10,000 allocations instead of 700: a SIP
    message allocates a few hundred objects, and with the default threshold
    the collector ran after nearly every message. Larger values cost less in
    total but each pause grows with it (at 50,000: pauses up to 0.7 s with
    10,000 devices, measured with benchmarks/register.py).
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 100)


def serve(
    config: Config,
    reactor: Any,
    install_signals: Callable[[Any], None] | None = None,
) -> int:
    """Migrate, build the service, run ``reactor`` until it stops; returns the exit code.

    ``install_signals`` defaults to handlers for SIGTERM/SIGINT that stop the
    reactor once; tests pass a no-op so no process-wide handler is touched.
    """
    log.info(
        "gbplatform {version} starting: SIP {sip_id} on {host}:{port} ({transports})",
        version=__version__, sip_id=config.sip.id, host=config.sip.host,
        port=config.sip.port, transports="/".join(config.sip.transports),
    )
    error = _migrate_in_child(config)
    if error is not None:
        log.critical("cannot start: {error}", error=error)
        return 1
    from gbplatform.app.service import make_service

    service = make_service(config, reactor)
    service.startService()  # type: ignore[no-untyped-call]
    tune_gc()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.callWhenRunning(install_signals or _install_signal_handlers, reactor)
    reactor.run()
    log.info("gbplatform stopped")
    return 0


def _install_signal_handlers(reactor: Any) -> None:
    # Installed once the reactor runs so they replace Twisted's defaults and
    # a second signal during a slow shutdown is logged rather than re-stopping.
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        name = signal.Signals(signum).name
        if stopping:
            log.warn("received {signal} again; already shutting down", signal=name)
            return
        stopping = True
        log.info("received {signal}; shutting down", signal=name)
        reactor.callFromThread(reactor.stop)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _cmd_simulate(args: argparse.Namespace) -> int:
    try:
        args.device_ids = simulated_device_ids(args.first_id, args.devices)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    simulator = importlib.import_module("gbplatform.simulator.device")
    result = simulator.main(args)
    return result if isinstance(result, int) else 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "config": _cmd_config,
    "migrate": _cmd_migrate,
    "run": _cmd_run,
    "simulate": _cmd_simulate,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``gbplatform`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        # argparse exits for --help/--version (0) and usage errors (2).
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return _COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
