"""Errors of an export run: each carries a stable reason code recorded on the job."""

from __future__ import annotations


class ExportFailedError(Exception):
    """An export could not complete; ``reason`` is a stable code, ``detail`` a safe sentence."""

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason if detail is None else f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class ExportCancelledError(Exception):
    """The export was cancelled; its conversion is killed and its partial output removed."""


# Stable reason codes of failed exports (the job's ``error``).
UNSAFE_BACKING_FILE = "unsafe_source_backing_file"
UNSAFE_EXTERNAL_EXTENT = "unsafe_source_external_extent"
UNSAFE_DATA_FILE = "unsafe_source_data_file"
UNSUPPORTED_SOURCE_FORMAT = "unsupported_source_format"
SOURCE_FORMAT_MISMATCH = "source_format_mismatch"
SOURCE_UNREADABLE = "source_unreadable"
SOURCE_CHANGED = "source_changed"
SOURCE_UNAVAILABLE = "source_unavailable"  # the provider stopped serving it mid-export
SOURCE_MISMATCH = "source_mismatch"
INSUFFICIENT_SPACE = "insufficient_space"
CONVERSION_FAILED = "conversion_failed"
CONVERSION_USER_MISSING = "conversion_user_missing"
ARTIFACT_WRITE_FAILED = "artifact_write_failed"
INVALID_REQUEST = "invalid_export_request"
