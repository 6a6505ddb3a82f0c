"""The log formatter's last line of defence: anything that looks like a credential is masked."""

from __future__ import annotations

import io
import itertools
import json
import logging

import pytest

from hypersdk_kit.logs import _REDACTIONS, JsonFormatter, configure_logging, redact

TOKEN = "hsdk_s_" + "Ab3_" * 8


def every_pattern(text: str) -> str:
    """What the patterns make of ``text`` when all of them always run."""
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"session {TOKEN} refused", TOKEN),
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("AUTHORIZATION: BEARER abc.def-ghi", "abc.def-ghi"),
        ("amqps://gateway:s3cr3t-pw@rabbit:5671/", "s3cr3t-pw"),
        ('{"password": "hunter2-hunter2"}', "hunter2-hunter2"),
        ("PassWord=hunter2-hunter2", "hunter2-hunter2"),
        ("client_secret: abcdefgh", "abcdefgh"),
        ("X-Api-Key: k-123456", "k-123456"),
        ('"api_key":"k-123456"', "k-123456"),
        ("apikey=k-123456", "k-123456"),
        ("refresh_token=t-987654", "t-987654"),
        # Outside ASCII, case-insensitive matching has its own equivalences (U+0130 and U+212A
        # match "i" and "k"): such text must still be masked.
        ("ap\u0130_\u212aey=k-123456", "k-123456"),
    ],
)
def test_credentials_are_masked(text: str, secret: str) -> None:
    masked = redact(text)

    assert secret not in masked
    assert "REDACTED" in masked


def test_text_without_a_credential_is_left_alone() -> None:
    line = '{"route": "/api/v1/jobs/{job_id}", "principal": "alice", "status": 200}'

    assert redact(line) is line


def test_the_shortcut_never_changes_what_the_patterns_mask() -> None:
    # Fragments that trigger each pattern, in several cases, between harmless ones.
    fragments = [
        "GET /api/v1/vms",
        TOKEN,
        "hsdk_k_short",
        "bearer xyz",
        "BeArEr xyz",
        "https://u:p@h/",
        "Password: pw1",
        "SECRET=s",
        "Token=t",
        "api-KEY=k",
        "ApiKey: k",
        "\u0130",
        "\u017f",
        "tok\u212aen=x",
        '"',
        " ",
    ]
    for left, middle, right in itertools.product(fragments, repeat=3):
        text = f"{left} {middle}{right}"
        assert redact(text) == every_pattern(text), text


def test_the_formatter_writes_one_masked_json_object_per_record() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("gateway"))
    logger = logging.getLogger("test_log_redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("refused %s", TOKEN, extra={"route": "/api/v1/jobs", "status": 401})
        logger.warning("request", extra={"route": "/api/v1/jobs", "status": 200})
    finally:
        logger.removeHandler(handler)

    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert TOKEN not in first["message"]
    assert first["message"] == "refused hsdk_[REDACTED]"
    assert (first["service"], first["level"], first["status"]) == ("gateway", "WARNING", 401)
    assert second["message"] == "request"
    assert second["route"] == "/api/v1/jobs"


def test_configured_logging_writes_the_same_line_without_looking_up_the_caller(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, name, getattr(logging, name))  # restored afterwards
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    records: list[logging.LogRecord] = []

    configure_logging("gateway", "INFO")

    def keep(record: logging.LogRecord) -> bool:
        records.append(record)
        return True

    root.handlers[0].addFilter(keep)
    logging.getLogger("hypersdk_gateway.access").info(
        "request", extra={"route": "/api/v1/jobs", "status": 200}
    )

    line = json.loads(stream.getvalue())
    assert line["message"] == "request"
    assert (line["service"], line["route"], line["status"]) == ("gateway", "/api/v1/jobs", 200)
    assert records[0].pathname == "(unknown file)"  # no stack walk for a name no line shows
    assert records[0].threadName is None
