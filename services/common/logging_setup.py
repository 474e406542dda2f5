"""One logging set-up for every service: JSON lines in containers, text on a terminal, no secrets.

Every process calls `configure_logging(service)` once, first thing. It owns the root logger, so
every library logger (aiohttp, faust, mode, aiokafka, the confluent clients routed through
`services.common.kafka.logs`) comes out in the same format, with the same redaction:

- format: `MDMPUSH_LOG_FORMAT=json|text|auto`; `auto` (the default) writes JSON lines when stderr
  is not a terminal (a container, a log file) and readable text when a person is watching;
- level: `MDMPUSH_LOG_LEVEL` for the process, `MDMPUSH_<SERVICE>_LOG_LEVEL` over it (several
  services sharing one environment, as under `mdmpush up`), `MDMPUSH_LOG_LEVELS` per logger;
- the ids that follow one push (`request_id`, `job_id`, `enrollment_id`, ...) are passed as
  `extra=` and become JSON fields (text: `key=value` after the message);
- `RedactingFilter` sits on the handler, so it sees every record of every logger: APNs tokens,
  PushMagic values, Basic/Bearer credentials, HMAC signatures and password-like fields are masked
  even when someone logs them by mistake.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import sys
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Annotated, Any, Literal, TextIO

from pydantic import AfterValidator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _level_name(value: str) -> str:
    name = value.strip().upper()
    if name == "WARN":
        name = "WARNING"
    if not isinstance(logging.getLevelName(name), int):
        raise ValueError(f"unknown log level {value!r}: use DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return name


LogLevel = Annotated[str, AfterValidator(_level_name)]


class LogSettings(BaseSettings):
    """How every process logs (`MDMPUSH_LOG_*`)."""

    model_config = SettingsConfigDict(env_prefix="MDMPUSH_LOG_", frozen=True, extra="ignore")

    #: `json` (one object per line), `text`, or `auto`: JSON unless stderr is a terminal.
    format: Literal["auto", "json", "text"] = "auto"
    #: Level of every logger of the process (libraries included) unless overridden below.
    level: LogLevel = "INFO"
    #: Per-logger levels, JSON: `{"aiokafka": "WARNING", "services.sender.apns": "DEBUG"}`.
    levels: dict[str, LogLevel] = {}


class ServiceLogLevel(BaseSettings):
    """`MDMPUSH_<SERVICE>_LOG_LEVEL`: one service's level, over `MDMPUSH_LOG_LEVEL`.

    The prefix is the service's own (`ServiceLogLevel(_env_prefix="MDMPUSH_SENDER_")`), so the
    variable sits beside the service's other settings and one environment can tune one service.
    """

    #: The placeholder prefix names the variable in docs/configuration.md; every use passes the
    #: service's real one.
    model_config = SettingsConfigDict(env_prefix="MDMPUSH_<SERVICE>_", frozen=True,
                                      extra="ignore")

    #: Level of this service's process; unset = `MDMPUSH_LOG_LEVEL`.
    log_level: LogLevel | None = None


def service_env_prefix(service: str) -> str:
    """`sim-apns` -> `MDMPUSH_SIM_APNS_`: the prefix of a service's own variables."""
    return "MDMPUSH_" + re.sub(r"[^0-9A-Za-z]+", "_", service).upper() + "_"


# -- redaction --------------------------------------------------------------------------------

#: 64+ hex characters: an APNs device token (32 bytes today, up to 100 reserved).
_TOKEN = re.compile(r"(?<![0-9A-Za-z])[0-9A-Fa-f]{64,}(?![0-9A-Za-z])")
#: `key=value`, `key: value`, `"key": "value"` for keys whose value is a secret.
_SECRET_PAIR = re.compile(
    r"(?i)(?P<key>[\"']?[\w.-]*(?:push_?magic|magic|password|passwd|secret|api_?key|"
    r"signature|authorization|credentials?)[\"']?)(?P<sep>\s*[:=]\s*)"
    r"(?P<value>\"[^\"]*\"|'[^']*'|(?:(?:Basic|Bearer)\s+)?[^\s,;}\]\)]+)"
)
#: HTTP credentials anywhere in a line (a header dumped whole, a URL-less curl line).
_AUTH_SCHEME = re.compile(r"(?i)\b(Basic|Bearer)\s+[A-Za-z0-9._~+/=-]{8,}")
#: user:password@ in a URL.
_URL_PASSWORD = re.compile(r"(?i)(?P<scheme>[a-z][a-z0-9+.-]*://[^/\s:@]+):[^/\s@]+@")
#: Field names whose whole value is a secret, in `extra=` or structured records.
_SECRET_FIELD = re.compile(
    r"(?i)(push_?magic|^magic$|password|passwd|secret|api_?key|signature|authorization|"
    r"credentials?)")
#: Field names holding a device token: replaced by its fingerprint.
_TOKEN_FIELD = re.compile(r"(?i)(^token$|token_hex|device_token|push_token)")

REDACTED = "<redacted>"


def token_fingerprint(token: str) -> str:
    """A token's stand-in: the first 8 hex of its SHA-256, enough to tell lines about the same
    device apart, useless to push with."""
    return f"<token#{hashlib.sha256(token.lower().encode()).hexdigest()[:8]}>"


def redact(text: str) -> str:
    """`text` with every secret-looking part masked (see the module docstring)."""
    text = _SECRET_PAIR.sub(_mask_pair, text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('scheme')}:{REDACTED}@", text)
    return _TOKEN.sub(lambda m: token_fingerprint(m.group(0)), text)


def _mask_pair(match: re.Match[str]) -> str:
    value = match.group("value")
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{match.group('key')}{match.group('sep')}{quote}{REDACTED}{quote}"


def redact_field(name: str, value: Any) -> Any:
    """One `extra=` field, masked by its name first, then by what its value looks like."""
    if value is None:
        return None
    if _SECRET_FIELD.search(name):
        return REDACTED
    if _TOKEN_FIELD.search(name) and isinstance(value, str):
        return token_fingerprint(value)
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_field(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_field(name, v) for v in value]
    if isinstance(value, bool | int | float):
        return value
    return redact(str(value))


#: Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName"}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` fields of a record (request_id, job_id, enrollment_id, ...)."""
    return {k: v for k, v in vars(record).items()
            if k not in _RECORD_ATTRS and not k.startswith("_")}


class RedactingFilter(logging.Filter):
    """Masks secrets in the message, its arguments, the `extra=` fields and the traceback.

    On the handler, not on a logger: a logger's filters do not see records propagated from its
    children, a handler's see every record it writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = ()
        for key, value in extra_fields(record).items():
            setattr(record, key, redact_field(key, value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


# -- formats ----------------------------------------------------------------------------------

def _timestamp(record: logging.LogRecord) -> str:
    moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, service, message, extras, exception."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "service": self.service,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            doc.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return json.dumps(doc, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time LEVEL service logger: message key=value ...` for a person at a terminal."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{k}={v}" for k, v in extra_fields(record).items())
        line = (f"{_timestamp(record)} {record.levelname:<7} {self.service} {record.name}: "
                f"{record.getMessage()}" + (f" {extras}" if extras else ""))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def wants_json(setting: str, stream: TextIO) -> bool:
    if setting != "auto":
        return setting == "json"
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):
        return True


# -- set-up -----------------------------------------------------------------------------------

def configure_logging(service: str, *, settings: LogSettings | None = None,
                      stream: TextIO | None = None) -> logging.Handler:
    """Make the root logger the process's only log output; returns its handler.

    Replaces any handler set before (logging.basicConfig, a library's), routes warnings and
    uncaught exceptions (main and other threads) through it, so even a crash is one JSON line."""
    settings = settings or LogSettings()
    stream = stream or sys.stderr
    # `_env_prefix` is a pydantic-settings init argument its stubs do not declare.
    service_level = ServiceLogLevel(
        _env_prefix=service_env_prefix(service)).log_level  # type: ignore[call-arg]
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(service) if wants_json(settings.format, stream)
                         else TextFormatter(service))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(service_level or settings.level)
    for name, level in settings.levels.items():
        logging.getLogger(name).setLevel(level)
    logging.captureWarnings(True)
    _log_uncaught_exceptions()
    return handler


def _log_uncaught_exceptions() -> None:
    log = logging.getLogger("mdmpush.uncaught")

    def on_exception(kind: type[BaseException], exc: BaseException,
                     tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        log.critical("uncaught exception: %s", exc, exc_info=(kind, exc, tb))

    def on_thread_exception(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or isinstance(args.exc_value, SystemExit):
            return
        log.critical("uncaught exception in thread %s: %s",
                     args.thread.name if args.thread else "?", args.exc_value,
                     exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    sys.excepthook = on_exception
    threading.excepthook = on_thread_exception
