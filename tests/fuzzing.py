"""Hypothesis strategies for values a user may hand the engine, and how to compare
what comes back: shared by the unit sweep and the sweep through a real worker."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text with lone surrogates (not valid UTF-8), NUL and everything else.
texts = st.text(st.characters(codec=None), max_size=30)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
    st.binary(max_size=10),  # bytes: not JSON
    st.sets(st.integers(), max_size=3),
    st.datetimes(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.uuids(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(st.one_of(texts, st.integers()), inner, max_size=4),
    ),
    max_leaves=20,
)


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def _circular(kind: str) -> Any:
    if kind == "list":
        loop: list[Any] = [1]
        loop.append(loop)
        return loop
    node: dict[str, Any] = {"a": 1}
    node["self"] = {"deeper": [node]}
    return node


odd = st.one_of(
    st.integers(1, 400).map(_nested),
    st.sampled_from(["list", "dict"]).map(_circular),
    st.integers(0, 2_500_000).map(lambda n: "x" * n),  # over HOTMESH_MAX_PAYLOAD_BYTES
    st.just(float("nan")),
    st.just("\udcff lone surrogate"),
    st.just(b"\xff\xfe not utf-8".decode("utf-8", "surrogateescape")),
)
arguments = st.one_of(values, odd)


def plain(value: Any) -> Any:
    """What a JSON round trip should give back: tuples as lists."""
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def same(left: Any, right: Any) -> bool:
    """Equal, with NaN equal to NaN at any depth."""
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left):
        return math.isnan(right)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(same, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(same(v, right[k]) for k, v in left.items())
    return bool(left == right)


def jsonb_exact(value: Any, depth: int = 0) -> bool:
    """True for every value: floats JSONB would store inexactly are tagged."""
    if depth > 50:  # deep or circular: start() rejects or stores it without floats
        return True
    if isinstance(value, float):
        return True  # large floats are stored tagged, so they round-trip exactly
    if isinstance(value, list | tuple):
        return all(jsonb_exact(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(jsonb_exact(v, depth + 1) for v in value.values())
    return True
