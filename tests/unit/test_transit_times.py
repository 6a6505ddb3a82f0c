"""Reading transit's creation times, which decide when a rotated key starts to sign."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hypersdk_kit.transit import _timestamp


def test_nanosecond_utc_times_are_read_to_the_fraction() -> None:
    expected = datetime(2026, 12, 7, 3, 42, 54, tzinfo=UTC).timestamp() + 0.103148868
    assert _timestamp("2026-12-07T03:42:54.103148868Z") == pytest.approx(expected, abs=1e-6)


def test_offsets_and_whole_seconds_are_read() -> None:
    utc = datetime(2026, 12, 7, 2, 0, 0, tzinfo=UTC).timestamp()
    assert _timestamp("2026-12-07T03:00:00+01:00") == utc
    assert _timestamp("2026-12-07T02:00:00Z") == utc


def test_a_missing_time_counts_as_old_and_a_garbled_one_is_refused() -> None:
    assert _timestamp(None) == 0.0
    with pytest.raises(ValueError, match="unreadable creation_time"):
        _timestamp("yesterday")
