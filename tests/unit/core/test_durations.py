from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lapse.core.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("45s", 45), ("1h0m1s", 3601), ("90m", 5400)],
)
def test_parses(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["", "0s", "0h0m0s", "1d", "1.5h", "-1h", "h", "1H", " 1h", "1m1h"]
)
def test_refuses(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(5400, "1h30m"), (20, "20s"), (3600, "1h"), (0, "0s")]
)
def test_formats(seconds: int, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


@given(st.integers(min_value=1, max_value=9999 * 3600))
def test_format_then_parse_round_trips(seconds: int) -> None:
    assert parse_duration(format_duration(timedelta(seconds=seconds))) == timedelta(seconds=seconds)


@given(st.text(max_size=12))
def test_never_crashes_on_any_text(text: str) -> None:
    try:
        value = parse_duration(text)
    except DurationError:
        return
    assert value > timedelta(0)
