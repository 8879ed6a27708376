"""Turn arguments, results and payloads into JSON and back.

Values are stored as plain JSON in JSONB columns. Types JSON lacks but Django users
pass every day (datetimes, dates, times, durations, decimals, UUIDs) are written as
a small tagged object, so they come back as the same type: `{"__hm__": "date",
"v": "2026-11-25"}`. Tuples come back as lists, as in any JSON round trip.

With HOTMESH_CODEC set, every stored value also passes through the codec: `seal`
turns the JSON into `{"__hm__": "codec", "v": codec.encode(json)}` before it is
written, `unseal` reverses it after it is read. The sealed fields do it themselves
(`models.SealedJSONField`); the engine's raw SQL calls `seal` for its parameters, and
`from_json` unseals what raw SQL read.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.utils.dateparse import parse_date, parse_datetime, parse_duration
from django.utils.duration import duration_iso_string

from hotmesh_django.codecs import active_codec
from hotmesh_django.conf import settings
from hotmesh_django.exceptions import CodecError, PayloadTooLarge

TAG = "__hm__"
# The tag of a value stored through HOTMESH_CODEC.
SEALED = "codec"

_ENCODERS: list[tuple[type, str, Callable[[Any], str]]] = [
    # datetime before date: a datetime is a date too.
    (datetime.datetime, "datetime", lambda v: v.isoformat()),
    (datetime.date, "date", lambda v: v.isoformat()),
    (datetime.time, "time", lambda v: v.isoformat()),
    (datetime.timedelta, "timedelta", duration_iso_string),
    (decimal.Decimal, "decimal", str),
    (uuid.UUID, "uuid", str),
]

_DECODERS: dict[str, Callable[[str], Any]] = {
    "datetime": parse_datetime,
    "date": parse_date,
    # fromisoformat keeps an aware time's offset (Django's parse_time drops it).
    "time": datetime.time.fromisoformat,
    "timedelta": parse_duration,
    "decimal": decimal.Decimal,
    "uuid": uuid.UUID,
    "float": float,
}

_MAX_DEPTH = 200
_EXACT_FLOAT_LIMIT = 1e15
# Ints this small always fit Python's int-to-text digit limit (640 digits at its
# lowest setting), so only larger ones pay for a trial conversion.
_INT_CHECK_BITS = 2000


def to_json(value: Any, *, what: str = "value") -> Any:
    """Return `value` as a JSON-safe structure, or raise TypeError naming `what`."""
    return _encode(value, what, 0, set())


def _encode(value: Any, where: str, depth: int, seen: set[int]) -> Any:
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, str):
            _check_text(value, where)
        elif isinstance(value, int) and value.bit_length() > _INT_CHECK_BITS:
            _check_int(value, where)
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{where} is {value!r}, which JSON cannot represent.")
        if abs(value) >= _EXACT_FLOAT_LIMIT:
            # JSONB keeps numbers as decimals and prints large ones without an
            # exponent, so they come back as a different int: keep the exact repr.
            return {TAG: "float", "v": repr(value)}
        return value
    if depth > _MAX_DEPTH:
        raise TypeError(f"{where} is nested more than {_MAX_DEPTH} levels deep.")
    for kind, tag, encode in _ENCODERS:
        if isinstance(value, kind):
            return {TAG: tag, "v": encode(value)}
    if isinstance(value, list | tuple | Mapping):
        if id(value) in seen:
            raise TypeError(f"{where} contains a reference to itself.")
        seen.add(id(value))
        try:
            if isinstance(value, Mapping):
                out: dict[str, Any] = {}
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise TypeError(
                            f"{where} has a key {key!r} of type {type(key).__name__}; "
                            "JSON object keys must be strings."
                        )
                    _check_text(key, where)
                    out[key] = _encode(item, f"{where}[{key!r}]", depth + 1, seen)
                if TAG in out:
                    raise TypeError(f"{where} uses the reserved key {TAG!r}.")
                return out
            return [_encode(item, f"{where}[{i}]", depth + 1, seen) for i, item in enumerate(value)]
        finally:
            seen.discard(id(value))
    raise TypeError(
        f"{where} is of type {type(value).__name__}, which is not JSON serializable. "
        "Pass JSON values (str, int, float, bool, None, list, dict) or dates, "
        "decimals and UUIDs."
    )


def _check_int(value: int, where: str) -> None:
    # json.dumps would raise a bare "Exceeds the limit (4300 digits)" ValueError later,
    # naming no argument; Python's limit (sys.set_int_max_str_digits) decides.
    try:
        str(value)
    except ValueError:
        raise TypeError(
            f"{where} is an integer of more than {sys.get_int_max_str_digits()} digits, "
            "which JSON cannot represent here; pass it as a string."
        ) from None


def _check_text(text: str, where: str) -> None:
    # Postgres text cannot hold NUL, and lone surrogates are not valid UTF-8.
    if "\x00" in text:
        raise TypeError(f"{where} contains a NUL character, which Postgres cannot store.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TypeError(f"{where} is not valid UTF-8 text: {exc.reason}.") from None


def check_name_text(name: str, what: str) -> None:
    """Raise ValueError when the name `name` holds what a text column cannot (NUL, a
    lone surrogate): refused before any SQL, so the caller's transaction survives."""
    try:
        _check_text(name, what)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def check_signal_name(name: object) -> None:
    """Raise ValueError unless `name` can name a signal (the column holds 255)."""
    if not isinstance(name, str) or not name or len(name) > 255:
        raise ValueError("A signal name must be a non-empty string of at most 255 characters.")
    check_name_text(name, f"The signal name {name!r}")


def storable_text(text: str) -> str:
    """`text` with what `_check_text` refuses escaped instead: for text the engine
    writes on its own account (an exception's message), which must be stored."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def from_json(data: Any) -> Any:
    """Return the Python value a `to_json` structure stands for.

    Raise CodecError for a sealed value that HOTMESH_CODEC cannot open, and
    ValueError for one nested deeper than Python's recursion limit (which Postgres
    stores, json.loads reads on Python 3.12+, and only a writer other than start()
    can produce: `to_json` refuses more than 200 levels).
    """
    try:
        return _from_json(data)
    except RecursionError:
        raise ValueError("A stored value is nested too deeply to decode.") from None


def _from_json(data: Any) -> Any:
    if isinstance(data, Unreadable):
        raise data.error
    if isinstance(data, Undecodable):
        raise ValueError(f"A stored value is {data!r}.")
    if isinstance(data, list):
        return [_from_json(item) for item in data]
    if isinstance(data, dict):
        tag = data.get(TAG)
        if tag is not None and len(data) == 2 and "v" in data:
            if tag == SEALED:
                return _from_json(unseal(data))
            decoder = _DECODERS.get(tag)
            if decoder is None:
                raise ValueError(f"Unknown value tag {tag!r} in stored payload.")
            return decoder(data["v"])
        return {key: _from_json(item) for key, item in data.items()}
    return data


def check_size(data: Any, *, what: str) -> None:
    """Raise PayloadTooLarge when `data` serializes beyond HOTMESH_MAX_PAYLOAD_BYTES."""
    if settings.max_payload_bytes > 0:
        _check_length(_dumps(data), what)


# ASCII (json's default), so the text's length is its size in bytes. One encoder:
# json.dumps() with options makes a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _dumps(data: Any) -> str:
    return _ENCODER.encode(data)


def _check_length(text: str, what: str) -> None:
    limit = settings.max_payload_bytes
    if 0 < limit < len(text):
        raise PayloadTooLarge(
            f"{what} is {len(text)} bytes serialized, over HOTMESH_MAX_PAYLOAD_BYTES={limit}."
        )


def _check_call_length(text: str, data: dict[str, Any], names: Sequence[str]) -> None:
    """As _check_length for a call's JSON `text`, naming its largest argument."""
    limit = settings.max_payload_bytes
    if not 0 < limit < len(text):
        return
    # Only on the way to an error: the size of each argument alone.
    sizes = [(len(_dumps(v)), _positional(i, names)) for i, v in enumerate(data["args"])]
    sizes += [(len(_dumps(v)), f"argument {k!r}") for k, v in data["kwargs"].items()]
    if data.get("headers"):
        sizes.append((len(_dumps(data["headers"])), "the middleware headers"))
    largest = ""
    if sizes:
        size, name = max(sizes)
        largest = f"; the largest is {name}, {size} bytes"
    raise PayloadTooLarge(
        f"The arguments are {len(text)} bytes serialized, over "
        f"HOTMESH_MAX_PAYLOAD_BYTES={limit}{largest}."
    )


def search_text(search: Mapping[str, Any]) -> str:
    """Search attributes as the JSON text a start binds, within the payload limit."""
    text = _dumps(to_json(dict(search), what="search"))
    _check_length(text, "The search attributes object")
    return text


def encode_search(attrs: Mapping[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
    """`attrs` as the JSON to merge into the `stored` search attributes, checked as
    `search_text` checks a start's: each name and value, and the merged size."""
    encoded: dict[str, Any] = to_json(dict(attrs), what="search")
    check_size({**stored, **encoded}, what="The search attributes object")
    return encoded


def encode_call(
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    headers: Mapping[str, Any] | None = None,
    *,
    names: Sequence[str] = (),
) -> dict[str, Any]:
    """Serialize call arguments as {"args": [...], "kwargs": {...}}.

    Middleware headers, when there are any, ride along as a "headers" key, so they
    are stored (and retried, re-run, encoded) with the payload they belong to and
    need no column of their own. Raise TypeError naming the first argument or
    header that is not JSON, so nothing is enqueued with half its input. `names`
    are the function's positional parameters (definitions.positional_names), so a
    message says "argument 1 ('cents')" and not only the index.
    """
    data = _call_data(args, kwargs, headers, names)
    if settings.max_payload_bytes > 0:
        _check_call_length(_dumps(data), data, names)
    return data


def encode_call_text(
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    headers: Mapping[str, Any] | None = None,
    *,
    names: Sequence[str] = (),
) -> str:
    """As `encode_call`, then `seal`, returned as JSON text: what a start writes.

    The text is made once and bound as it is (cast to jsonb in SQL) for both the
    job's input and its message's payload, instead of each parameter adapter
    serializing the same structure again.
    """
    data = _call_data(args, kwargs, headers, names)
    text = _dumps(data)
    _check_call_length(text, data, names)
    sealed = seal(data)
    return text if sealed is data else _dumps(sealed)


def _positional(index: int, names: Sequence[str]) -> str:
    if index < len(names):
        return f"argument {index} ({names[index]!r})"
    return f"argument {index}"


def _call_data(
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    headers: Mapping[str, Any] | None,
    names: Sequence[str],
) -> dict[str, Any]:
    for key in kwargs:
        _check_argument_name(key)
    data = {
        "args": [to_json(a, what=_positional(i, names)) for i, a in enumerate(args)],
        "kwargs": {k: to_json(v, what=f"argument {k!r}") for k, v in kwargs.items()},
    }
    if headers:
        if not isinstance(headers, Mapping):
            raise TypeError(f"headers must be a dict, not {type(headers).__name__}.")
        data["headers"] = to_json(dict(headers), what="headers")
    return data


def _check_argument_name(name: str) -> None:
    # The kwargs object is stored as a JSON object: a name Postgres cannot hold
    # fails the INSERT, and the tag key would make it read back as a tagged value.
    _check_text(name, f"The argument name {name!r}")
    if name == TAG:
        raise TypeError(f"The argument name {TAG!r} is reserved; rename the parameter.")


def decode_call(data: Any) -> tuple[list[Any], dict[str, Any]]:
    """Return (args, kwargs) from an `encode_call` structure; ValueError if malformed.

    Raise CodecError when it is sealed and cannot be unsealed.
    """
    data = unseal(data)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("args", []), list)
        or not isinstance(data.get("kwargs", {}), dict)
    ):
        raise ValueError(f"Malformed call payload: {str(data)[:200]!r}")
    try:
        return from_json(data.get("args", [])), from_json(data.get("kwargs", {}))
    except ValueError as exc:
        raise ValueError(f"Malformed call payload: {exc}") from None


def decode_headers(data: Any) -> dict[str, Any]:
    """Return the headers of an `encode_call` structure ({} when it has none);
    ValueError if malformed, CodecError when sealed and it cannot be unsealed."""
    data = unseal(data)
    found = data.get("headers") if isinstance(data, dict) else None
    if not found:
        return {}
    if not isinstance(found, dict):
        raise ValueError(f"Malformed headers in call payload: {str(found)[:200]!r}")
    return from_json(found)  # type: ignore[no-any-return]


def encode_value(value: Any, *, what: str) -> Any:
    """Serialize one value (a result or a signal payload) and check its size."""
    data = to_json(value, what=what)
    check_size(data, what=what[:1].upper() + what[1:])
    return data


# -- the codec envelope ------------------------------------------------------------------


def is_sealed(data: Any) -> bool:
    """True when `data` is a value stored through HOTMESH_CODEC."""
    return isinstance(data, dict) and len(data) == 2 and data.get(TAG) == SEALED and "v" in data


def seal(data: Any) -> Any:
    """Return JSON `data` as it is to be stored: through HOTMESH_CODEC when one is set.

    None stays None (SQL NULL, and nothing to hide), and a value that is already
    sealed is kept as it is, so copying a stored value from row to row (a child's
    result to its parent's step) never seals twice. User data cannot look sealed:
    `to_json` refuses the reserved key.
    """
    if data is None or is_sealed(data):
        return data
    codec = active_codec()
    if codec is None:
        return data
    try:
        return {TAG: SEALED, "v": codec.encode(data)}
    except CodecError:
        raise
    except Exception as exc:
        raise CodecError(
            f"HOTMESH_CODEC could not encode a value: {type(exc).__name__}: {exc}"
        ) from exc


def unseal(data: Any) -> Any:
    """Return the JSON a stored value stands for; values stored plain pass through.

    Raise CodecError when the value is sealed and cannot be opened.
    """
    if isinstance(data, Unreadable):
        raise data.error
    if not is_sealed(data):
        return data
    codec = active_codec()
    if codec is None:
        raise CodecError(
            "A stored value was sealed by HOTMESH_CODEC, but no codec is set in this "
            "process: set HOTMESH_CODEC (and its keys) as the process that wrote it had."
        )
    try:
        return codec.decode(data["v"])
    except CodecError:
        raise
    except Exception as exc:
        raise CodecError(
            f"HOTMESH_CODEC could not decode a value: {type(exc).__name__}: {exc}"
        ) from exc


def loads_stored(text: str | bytes) -> Any:
    """Decode JSON text read from a jsonb column.

    JSON nested deeper than Python's recursion limit (Postgres accepts it, and only
    a writer other than start() can store it) comes back as `Undecodable`, so the
    job it belongs to fails as malformed instead of the worker that read it.
    """
    try:
        return json.loads(text)
    except RecursionError:
        return Undecodable(len(text))


class Undecodable:
    """A stored JSON value too deeply nested to decode. Neither a dict nor a list,
    so `decode_call` refuses it as a malformed payload."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __repr__(self) -> str:
        return f"<JSON of {self.size} characters nested too deeply to decode>"


class Unreadable:
    """A stored value this process cannot unseal, as loaded into a model field.

    Loading a row never fails on it (the admin still lists the job, the worker can
    still move the job aside); using the value does: `from_json` and `unseal` raise
    the CodecError. Saved back, it writes the stored value unchanged.
    """

    __slots__ = ("error", "stored")

    def __init__(self, stored: Any, error: CodecError) -> None:
        self.stored = stored
        self.error = error

    def __repr__(self) -> str:
        return f"<Unreadable: {self.error}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unreadable) and other.stored == self.stored

    __hash__ = None  # type: ignore[assignment]


def readable(value: Any) -> Any:
    """Return `value`, or raise its CodecError when it could not be unsealed."""
    if isinstance(value, Unreadable):
        raise value.error
    return value


def open_stored(data: Any) -> Any:
    """Unseal a value read from a sealed column; an Unreadable one on failure."""
    try:
        return unseal(data)
    except CodecError as exc:
        return Unreadable(data, exc)
