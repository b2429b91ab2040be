"""Logging setup shared by ``gbplatform run`` and ``gbplatform simulate``.

``make_log_observer`` is the stdout/stderr observer for ``[log]`` (text or JSON
lines, filtered by level); ``setup_logging`` installs it for the platform and
forwards stdlib ``logging`` records (from the sans-IO ``sip``/``media`` cores)
to twisted.logger.
"""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, cast

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
    textFileLogObserver,
)
from zope.interface import provider

from gbplatform.app.config import LogConfig

__all__ = ["make_log_observer", "setup_logging"]


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def _json_line_observer(stream: IO[str]) -> Any:
    """One JSON object per line: time, level, namespace, message and the event's fields."""

    def observe(event: dict[str, Any]) -> None:
        record: dict[str, Any] = {
            "time": datetime.fromtimestamp(event.get("log_time", 0.0), UTC).isoformat(),
            "level": event["log_level"].name if "log_level" in event else "info",
            "namespace": event.get("log_namespace", ""),
            "message": formatEvent(event),
        }
        for key, value in event.items():
            if not key.startswith("log_") and key not in record:
                record[key] = _json_value(value)
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        stream.flush()

    return provider(ILogObserver)(observe)


def make_log_observer(config: LogConfig, stream: IO[str]) -> ILogObserver:
    """The stdout observer for ``[log]``: text or JSON lines, filtered by level."""
    inner: Any = (
        _json_line_observer(stream) if config.format == "json" else textFileLogObserver(stream)
    )
    predicate: Any = LogLevelFilterPredicate(
        defaultLogLevel=LogLevel.levelWithName(config.level)
    )
    return cast(ILogObserver, FilteringLogObserver(inner, [predicate]))


_STDLIB_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _StdlibToTwisted(logging.Handler):
    """Forwards ``logging`` records (from the sans-IO ``sip``/``media`` cores) to twisted.logger."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.CRITICAL:
            level = LogLevel.critical
        elif record.levelno >= logging.ERROR:
            level = LogLevel.error
        elif record.levelno >= logging.WARNING:
            level = LogLevel.warn
        elif record.levelno >= logging.INFO:
            level = LogLevel.info
        else:
            level = LogLevel.debug
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        Logger(namespace=record.name).emit(level, "{text}", text=text)


def setup_logging(config: LogConfig) -> None:
    globalLogBeginner.beginLoggingTo(
        [make_log_observer(config, sys.stdout)], redirectStandardIO=False
    )
    root = logging.getLogger()
    root.setLevel(_STDLIB_LEVELS[config.level])
    root.addHandler(_StdlibToTwisted())
