from __future__ import annotations

import pytest

from hotmesh_django import NonRetryableError, RetryPolicy


@pytest.mark.parametrize(
    ("policy", "attempt", "expected"),
    [
        (RetryPolicy(), 1, 1.0),
        (RetryPolicy(), 2, 2.0),
        (RetryPolicy(), 3, None),  # max_attempts=3: the third failure is final
        (RetryPolicy(max_attempts=10, initial_interval=0.5, backoff=3.0), 3, 4.5),
        (RetryPolicy(max_attempts=50, max_interval=60.0), 20, 60.0),  # capped
        (RetryPolicy(max_attempts=100_000), 99_999, 300.0),  # no float overflow
        (RetryPolicy(max_attempts=1), 1, None),
        (RetryPolicy(max_attempts=5, backoff=1.0, initial_interval=2.0), 4, 2.0),
    ],
)
def test_delay_after(policy: RetryPolicy, attempt: int, expected: float | None) -> None:
    assert policy.delay_after(attempt) == expected


def test_non_retryable_by_type_name_and_marker() -> None:
    policy = RetryPolicy(non_retryable=(KeyError, "ZeroDivisionError"))
    assert not policy.is_retryable(KeyError("x"))
    assert not policy.is_retryable(ZeroDivisionError())
    assert not policy.is_retryable(NonRetryableError("stop"))
    assert policy.is_retryable(ValueError("again"))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"backoff": 0.5},
        {"initial_interval": -1},
        {"max_attempts": 1.5},
        # Once accepted, these failed in the worker when a step first failed: the
        # step sat RUNNING until its lease ran out, attempt after attempt.
        {"initial_interval": float("nan")},
        {"initial_interval": float("inf")},
        {"max_interval": 1e300},
        {"backoff": float("nan")},
        {"backoff": 1e10},
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_a_bare_non_retryable_type_is_taken_as_one() -> None:
    """non_retryable=ValueError (no tuple) once failed the step with "'type' object is
    not iterable" in the worker, every attempt."""
    policy = RetryPolicy(non_retryable=ValueError)  # type: ignore[arg-type]
    assert policy.non_retryable == (ValueError,)
    assert not policy.is_retryable(ValueError())
    assert RetryPolicy(non_retryable="KeyError").non_retryable == ("KeyError",)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="exception types or their names, not 3"):
        RetryPolicy(non_retryable=(ValueError, 3))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not <class 'int'>"):
        RetryPolicy(non_retryable=(int,))  # type: ignore[arg-type]
