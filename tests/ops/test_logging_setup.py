"""The one log format: JSON or text, levels from settings, push ids as fields, no secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from services.common.logging_setup import (
    REDACTED,
    LogSettings,
    configure_logging,
    redact,
    token_fingerprint,
)

TOKEN = "0f" * 32
MAGIC = "5C1F3B6A-9D52-4E7B-8F11-2A3B4C5D6E7F"
BASIC = "Basic bmFub21kbTpzM2NyZXQta2V5LXZhbHVl"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging owns the root logger: give pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(logging.NOTSET)
    logging.captureWarnings(False)


def _capture(fmt: str = "json", **settings: object) -> io.StringIO:
    out = io.StringIO()
    configure_logging("sender", settings=LogSettings(format=fmt, **settings),  # type: ignore[arg-type]
                      stream=out)
    return out


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_line_carries_the_push_ids_as_fields() -> None:
    out = _capture()
    logging.getLogger("services.sender.service").info(
        "pushed %d", 1, extra={"request_id": "req-1", "job_id": "req-1/UDID-1",
                               "enrollment_id": "UDID-1"})
    [doc] = _lines(out)
    assert doc["level"] == "INFO" and doc["logger"] == "services.sender.service"
    assert doc["service"] == "sender" and doc["message"] == "pushed 1"
    assert (doc["request_id"], doc["job_id"], doc["enrollment_id"]) == (
        "req-1", "req-1/UDID-1", "UDID-1")
    assert str(doc["time"]).endswith("Z")


def test_library_loggers_and_exceptions_come_out_in_the_same_format() -> None:
    out = _capture()
    logging.getLogger("aiokafka.conn").warning("connection to %s failed", "broker:9092")
    try:
        raise RuntimeError(f"refused token {TOKEN}")
    except RuntimeError:
        logging.getLogger("aiohttp.server").exception("handler failed")
    first, second = _lines(out)
    assert first["logger"] == "aiokafka.conn" and first["level"] == "WARNING"
    assert second["level"] == "ERROR" and "RuntimeError" in str(second["exception"])
    assert TOKEN not in out.getvalue()


def test_text_on_request_has_level_logger_and_extras() -> None:
    out = _capture("text")
    logging.getLogger("services.gateway.app").warning("slow", extra={"request_id": "r-9"})
    line = out.getvalue().strip()
    assert " WARNING sender services.gateway.app: slow request_id=r-9" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_auto_is_json_off_a_terminal() -> None:
    out = _capture("auto")  # a StringIO is not a TTY: a container's stderr
    logging.getLogger("x").warning("hello")
    assert _lines(out)[0]["message"] == "hello"


def test_levels_from_settings_and_the_service_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    out = _capture(level="WARNING", levels={"aiokafka": "error"})
    logging.getLogger("services.x").info("dropped: below WARNING")
    logging.getLogger("aiokafka").warning("dropped: aiokafka is at ERROR")
    logging.getLogger("services.x").warning("kept")
    assert [d["message"] for d in _lines(out)] == ["kept"]

    monkeypatch.setenv("MDMPUSH_SENDER_LOG_LEVEL", "debug")
    out = _capture(level="WARNING")
    logging.getLogger("services.x").debug("the sender's own level wins")
    assert [d["message"] for d in _lines(out)] == ["the sender's own level wins"]


def test_unknown_level_is_refused_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match="DEBUG, INFO"):
        LogSettings(level="LOUD")


@pytest.mark.parametrize("text, secret", [
    (f"pushing to {TOKEN}", TOKEN),
    (f"pushing to {TOKEN.upper()}0a0b", TOKEN.upper()),
    (f"push_magic={MAGIC}", MAGIC),
    (f"PushMagic: {MAGIC}", MAGIC),
    (f'{{"push_magic": "{MAGIC}", "x": 1}}', MAGIC),
    (f"Authorization: {BASIC}", BASIC.split()[1]),
    ("curl -H 'Authorization: Bearer eyJhbGciOiJFUzI1NiJ9.e30.sig'", "eyJhbGciOiJFUzI1NiJ9"),
    ("X-Hmac-Signature: q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJ4=", "q83vEjRWeJ"),
    ("sasl password=hunter2-hunter2", "hunter2"),
    ("api_key='k3y-value-long'", "k3y-value"),
    ("https://svc:pa55word@registry:8081/subjects", "pa55word"),
])
def test_redact_masks_secret_looking_text(text: str, secret: str) -> None:
    masked = redact(text)
    assert secret not in masked, masked
    assert REDACTED in masked or "<token#" in masked


def test_redact_keeps_ordinary_text_and_short_hex() -> None:
    text = "job req-1/UDID-1 answered 200 in 3.5 ms, apns-id 8a3f1c2e, offset deadbeef"
    assert redact(text) == text


def test_token_fingerprint_is_stable_and_short() -> None:
    assert token_fingerprint(TOKEN) == token_fingerprint(TOKEN.upper())
    assert len(token_fingerprint(TOKEN)) < 20 and TOKEN not in token_fingerprint(TOKEN)


def test_filter_masks_arguments_extras_and_tracebacks_of_every_logger() -> None:
    out = _capture()
    log = logging.getLogger("services.fanout.expand")
    log.info("job for %s", TOKEN, extra={"push_magic": MAGIC, "token_hex": TOKEN,
                                         "enrollment_id": "UDID-1",
                                         "headers": {"Authorization": BASIC}})
    try:
        raise ValueError(f"bad magic={MAGIC}")
    except ValueError:
        log.exception("failed", extra={"job_id": "r/UDID-1"})
    text = out.getvalue()
    for secret in (TOKEN, MAGIC, BASIC.split()[1]):
        assert secret not in text
    first, second = _lines(out)
    assert first["push_magic"] == REDACTED
    assert first["token_hex"] == token_fingerprint(TOKEN)
    assert first["enrollment_id"] == "UDID-1"
    assert first["headers"] == {"Authorization": REDACTED}
    assert second["job_id"] == "r/UDID-1" and "ValueError" in str(second["exception"])


def test_warnings_go_through_logging() -> None:
    import warnings

    out = _capture()
    warnings.warn("old setting", UserWarning, stacklevel=1)
    [doc] = _lines(out)
    assert doc["logger"] == "py.warnings" and "old setting" in str(doc["message"])
