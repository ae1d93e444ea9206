"""Parsing Banksia's Kafka messages (docs/contracts.md): every valid and malformed kind."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from kafka_bridge.batch import PAYLOAD_KEEP_BYTES, build
from kafka_bridge.messages import MAX_ERROR_CHARS, Arrival, Malformed, complete_time, parse

MAX = 65_536
STAGED = {
    "Inode": 45871,
    "Filename": "mwa/1234567890/1234567890_ch001.fits",
    "RequestTime": "2022-02-04 03:01:38 +0000 GMT",
    "CompleteTime": "2022-02-04 03:02:32 +0000 GMT",
    "Error": "",
}
T0 = datetime(2022, 2, 4, 3, 2, 32, tzinfo=UTC).timestamp()


def enc(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_staged_file() -> None:
    assert parse(enc(STAGED), MAX) == Arrival("mwa/1234567890/1234567890_ch001.fits", None, T0)


def test_failed_file() -> None:
    msg = dict(STAGED, Error="unable to stage file, no valid copies")
    assert parse(enc(msg), MAX) == Arrival(
        STAGED["Filename"], "unable to stage file, no valid copies", T0
    )


@pytest.mark.parametrize("error", [None, ""])
def test_null_or_empty_error_means_staged(error: str | None) -> None:
    parsed = parse(enc(dict(STAGED, Error=error)), MAX)
    assert isinstance(parsed, Arrival) and parsed.error is None


def test_only_filename_is_required() -> None:
    assert parse(enc({"Filename": "a/b.fits"}), MAX) == Arrival("a/b.fits", None, None)


def test_unknown_fields_ignored() -> None:
    parsed = parse(enc(dict(STAGED, Extra=[1, 2], Nested={"a": 1})), MAX)
    assert isinstance(parsed, Arrival)


def test_unicode_path_kept_exactly() -> None:
    parsed = parse(enc(dict(STAGED, Filename="mwa/ünï/cödé ✓.fits")), MAX)
    assert isinstance(parsed, Arrival) and parsed.path == "mwa/ünï/cödé ✓.fits"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2022-02-04 03:02:32 +0000 GMT", T0),
        ("2022-02-04 03:02:32.250000000 +0000 UTC", T0 + 0.25),
        ("2022-02-04 11:02:32 +0800 AWST", T0),
        ("2022-02-04 03:02:32 +0000", T0),
        ("yesterday", None),
        ("2022-13-45 99:99:99 +0000 GMT", None),
        ("", None),
    ],
)
def test_complete_time(text: str, expected: float | None) -> None:
    assert complete_time(text) == expected


def test_unreadable_time_keeps_the_arrival() -> None:
    parsed = parse(enc(dict(STAGED, CompleteTime="soon")), MAX)
    assert isinstance(parsed, Arrival) and parsed.time is None


def test_long_error_truncated() -> None:
    parsed = parse(enc(dict(STAGED, Error="x" * (MAX_ERROR_CHARS + 50))), MAX)
    assert isinstance(parsed, Arrival) and parsed.error == "x" * MAX_ERROR_CHARS


def test_error_with_nul_is_cleaned_not_rejected() -> None:
    parsed = parse(enc(dict(STAGED, Error="bad\u0000tape\ud800")), MAX)
    assert isinstance(parsed, Arrival)
    assert parsed.error is not None and "\x00" not in parsed.error
    parsed.error.encode("utf-8")  # storable


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty message"),
        (b"", "empty message"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"Filename": "a\xe9"}', "not UTF-8"),
        (b"{not json", "not JSON"),
        (b'{"Filename": "a"} trailing', "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),
        (b'["Filename", "a"]', "not a JSON object"),
        (b'"mwa/a.fits"', "not a JSON object"),
        (b"42", "not a JSON object"),
        (b"null", "not a JSON object"),
        (enc({"Error": ""}), "no Filename"),
        (enc({"Filename": None}), "no Filename"),
        (enc({"Filename": ""}), "empty Filename"),
        (enc({"Filename": 12}), "wrong type for Filename: int"),
        (enc({"Filename": ["a"]}), "wrong type for Filename: list"),
        (enc({"Filename": "a", "Error": 1}), "wrong type for Error: int"),
        (enc({"Filename": "a", "Error": {"x": 1}}), "wrong type for Error: dict"),
        (enc({"Filename": "a", "CompleteTime": 1644000000}), "wrong type for CompleteTime: int"),
        (enc({"Filename": "a", "Inode": "45871"}), "wrong type for Inode: str"),
        (enc({"Filename": "a\u0000b"}), "Filename is not storable text (NUL or lone surrogate)"),
        (enc({"Filename": "a\ud800b"}), "Filename is not storable text (NUL or lone surrogate)"),
    ],
)
def test_malformed(value: bytes | None, reason: str) -> None:
    parsed = parse(value, MAX if value is None or len(value) < MAX else 10**7)
    assert parsed == Malformed(reason)


def test_oversized() -> None:
    value = enc(dict(STAGED, Error="x" * 200))
    assert parse(value, 100) == Malformed(f"oversized: {len(value)} bytes > 100")
    assert isinstance(parse(value, len(value)), Arrival)


class FakeMessage:
    def __init__(self, value: bytes | None, offset: int, partition: int = 0, ts: int = 0) -> None:
        self._value, self._offset, self._partition, self._ts = value, offset, partition, ts

    def error(self) -> None:
        return None

    def value(self) -> bytes | None:
        return self._value

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts) if self._ts else (0, -1)


def test_batch_columns_offsets_and_malformed_rows() -> None:
    big = b"{" + b" " * 10_000 + b"}"
    msgs = [
        FakeMessage(enc(STAGED), 10, 0),
        FakeMessage(b"garbage", 11, 0),
        FakeMessage(enc({"Filename": "b", "Error": "lost"}), 5, 1, ts=1_700_000_000_123),
        FakeMessage(big, 12, 0),
    ]
    batch = build(msgs, MAX)
    assert batch.arrivals.paths == [STAGED["Filename"], "b"]
    assert batch.arrivals.errors == [None, "lost"]
    assert batch.arrivals.times == [T0, 1_700_000_000.123]
    assert batch.malformed.offsets == [11, 12]
    assert batch.malformed.reasons == ["not JSON", "no Filename"]
    assert batch.malformed.payloads[0] == b"garbage"
    assert len(batch.malformed.payloads[1]) == PAYLOAD_KEEP_BYTES
    assert batch.next_offsets() == {0: 13, 1: 6}
    assert batch.messages == 4 and batch.valid == 2


def test_batch_skips_already_applied_offsets_but_commits_them() -> None:
    msgs = [FakeMessage(enc({"Filename": f"f{i}"}), i) for i in range(10)]
    batch = build(msgs, MAX, skip_below={0: 7})
    assert batch.arrivals.paths == ["f7", "f8", "f9"]
    assert batch.skipped == 7
    assert batch.next_offsets() == {0: 10}


@pytest.mark.parametrize(
    "text",
    [
        '{"Filename": "a"}',
        '{"Filename": "a"}  \n\t\r',
        ' {"Filename": "a"}',
        '{"Filename": "a"} x',
        '{"Filename": "a"}{}',
        '{"Filename": "a"}\u00a0',
        '{"Filename": "a"}\x0b',
        '{"Filename": "a"}\x00',
        "{",
        '{"Filename": }',
        '{"Filename": "a\nb"}',
        '{"Filename": "\\ud800"}',
        '{"Inode": NaN, "Filename": "a"}',
        '{"Inode": 1e400, "Filename": "a"}',
        '{"a": 1, "a": 2}',
        "\ufeff{}",
        "[1]",
    ],
)
def test_fast_json_scan_agrees_with_json_loads(text: str) -> None:
    """The parser's direct use of the C scanner accepts and refuses exactly what json.loads does."""
    from kafka_bridge.messages import _loads

    def outcome(loads: Any) -> str:
        try:
            return repr(loads(text))
        except ValueError:
            return "refused"

    assert outcome(_loads) == outcome(json.loads)


def test_deeply_nested_message_is_malformed_not_a_crash() -> None:
    assert parse(b'{"a":' * 100_000, 10**7) == Malformed("not JSON")
