"""One Kafka message from Banksia -> an :class:`Arrival` or a :class:`Malformed`.

The message format is in docs/contracts.md, "Kafka notifications".

The archive is shared with other clients and its messages are not ours to trust:
anything the bridge cannot use becomes a :class:`Malformed` with a short reason,
is kept for inspection and never stops the consumer. What would break a whole
batch's SQL further down is rejected here, one message at a time: text that
PostgreSQL cannot store (NUL characters, lone surrogates from JSON escapes),
wrong JSON types, oversized values.

This runs once per message at tens of thousands of messages a second, so it is
written for speed: one JSON scan, a few type checks, small named tuples, and
expensive checks only when the raw bytes make them necessary. The JSON scan
calls the standard decoder's C scanner directly when the text starts with
``{`` (every Banksia message does): the same parser and the same strictness as
``json.loads``, without its Python-level wrapping, which cost about as much as
the parsing itself for messages this small.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

# Longest error text kept per file (the status shows a sample of them).
MAX_ERROR_CHARS = 2000

# json.loads(text) is _default_decoder.decode(text): skip whitespace, scan one
# value, skip whitespace, refuse anything left. _scan is that scanner (the C one).
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_JSON_SPACE = " \t\n\r"


def _loads(text: str) -> Any:
    """``json.loads(text)``, faster for text that starts with an object (raises ValueError)."""
    if text[:1] != "{":
        return json.loads(text)
    try:
        obj, end = _scan(text, 0)
    except StopIteration as exc:  # not reached for "{", kept for the contract
        raise ValueError("Expecting value") from exc
    if end != len(text) and text[end:].strip(_JSON_SPACE):
        raise ValueError("Extra data")
    return obj


class Arrival(NamedTuple):
    """A file's staging finished: ``error`` is None when it is on disk."""

    path: str
    error: str | None
    time: float | None  # CompleteTime as epoch seconds; None when absent or unreadable


class Malformed(NamedTuple):
    """A message the bridge cannot use, and why (a short, stable phrase)."""

    reason: str


_NOT_UTF8 = Malformed("not UTF-8")
_NOT_JSON = Malformed("not JSON")
_NOT_OBJECT = Malformed("not a JSON object")
_NO_FILENAME = Malformed("no Filename")
_EMPTY_FILENAME = Malformed("empty Filename")
_BAD_FILENAME_TEXT = Malformed("Filename is not storable text (NUL or lone surrogate)")
_EMPTY = Malformed("empty message")


def _wrong_type(field: str, value: object) -> Malformed:
    return Malformed(f"wrong type for {field}: {type(value).__name__}")


class _TimeCache:
    """Banksia writes whole seconds, so consecutive messages mostly repeat the string."""

    __slots__ = ("text", "value")

    def __init__(self) -> None:
        self.text: str = ""
        self.value: float | None = None


_time_cache = _TimeCache()


def complete_time(text: str) -> float | None:
    """Epoch seconds of a Go time string ``2022-02-04 03:02:32[.frac] +0000 GMT``, else None.

    An unreadable time does not make the message malformed: the arrival itself
    is what matters, and the caller falls back to the Kafka message timestamp.
    """
    cache = _time_cache
    if text == cache.text:
        return cache.value
    try:
        date, clock, offset = text.split(" ", 3)[:3]
        value: float | None = datetime.fromisoformat(f"{date}T{clock}{offset}").timestamp()
    except ValueError:
        value = None
    cache.text, cache.value = text, value
    return value


def _storable(text: str) -> bool:
    """PostgreSQL ``text`` holds neither NUL nor lone surrogates (JSON can encode both)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _clean_error(text: str) -> str:
    """Make an error text storable and bounded instead of rejecting the arrival."""
    text = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return text[:MAX_ERROR_CHARS]


def parse(value: bytes | None, max_bytes: int) -> Arrival | Malformed:
    """Validate one message value (bytes as read from Kafka)."""
    if not value:
        return _EMPTY
    if len(value) > max_bytes:
        return Malformed(f"oversized: {len(value)} bytes > {max_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return _NOT_UTF8
    try:
        obj: Any = _loads(text)
    except ValueError:
        return _NOT_JSON
    except RecursionError:
        return _NOT_JSON
    if type(obj) is not dict:
        return _NOT_OBJECT
    path = obj.get("Filename")
    if path is None:
        return _NO_FILENAME
    if type(path) is not str:
        return _wrong_type("Filename", path)
    if not path:
        return _EMPTY_FILENAME
    error = obj.get("Error")
    if error is not None and type(error) is not str:
        return _wrong_type("Error", error)
    when = obj.get("CompleteTime")
    if when is not None and type(when) is not str:
        return _wrong_type("CompleteTime", when)
    inode = obj.get("Inode")
    if inode is not None and (type(inode) is not int):
        return _wrong_type("Inode", inode)
    # Only a \u escape can put NUL or a lone surrogate into the decoded strings.
    if "\\u" in text or "\x00" in text:
        if not _storable(path):
            return _BAD_FILENAME_TEXT
        if error:
            error = _clean_error(error)
    elif error and len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS]
    return Arrival(path, error or None, complete_time(when) if when else None)
