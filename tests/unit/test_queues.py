from __future__ import annotations

import pytest

from hotmesh_django.engine.queues import Rate, parse_rate, validate_queue_options


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("100/m", Rate(count=100, seconds=60)),
        ("10/s", Rate(count=10, seconds=1)),
        ("5/10s", Rate(count=5, seconds=10)),
        ("1000 / hour", Rate(count=1000, seconds=3600)),
        ("2/d", Rate(count=2, seconds=86400)),
    ],
)
def test_parse_rate(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["", "100", "x/m", "10/y", "-1/s", "0/s", "5/0s"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_queue_options_validation() -> None:
    assert validate_queue_options("q", {"concurrency": 2, "rate": "1/s"}) == []
    assert "integer >= 1" in validate_queue_options("q", {"concurrency": 0})[0]
    assert "unknown option" in validate_queue_options("q", {"speed": 1})[0]
    assert "Bad rate" in validate_queue_options("q", {"rate": "fast"})[0]
    assert "must be a dict" in validate_queue_options("q", 3)[0]
