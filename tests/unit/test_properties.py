"""Property tests (hypothesis) of what the outside sends: Kafka messages, data_files answers.

Any bytes give either a usable record or a counted rejection, never an escaping
exception: ``kafka_bridge.messages.parse`` returns an ``Arrival`` whose fields the
database can store or a ``Malformed`` with a reason (which the bridge counts and
keeps); ``mwa_staging.resolve`` turns any answer body into paths that pass the
CRD's rules for ``spec.files`` or a ``ResolveError`` with return code 100 or 101.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafka_bridge.messages import MAX_ERROR_CHARS, Arrival, Malformed, parse
from mwa_staging.resolve import (
    MAX_PATH_LENGTH,
    ResolveError,
    archive_path,
    paths_from_body,
    resolve_observation,
)
from mwa_staging.settings import Settings
from mwa_staging.vocabulary import ReturnCode

MAX_BYTES = 65_536
FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
field_values = json_values | st.text() | st.text(alphabet=st.characters(codec="utf-8"))


def storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_record(found: Arrival | Malformed) -> None:
    assert isinstance(found, Arrival | Malformed)
    if isinstance(found, Malformed):
        assert isinstance(found.reason, str) and found.reason
        return
    assert isinstance(found.path, str) and found.path and storable(found.path)
    assert found.error is None or (
        isinstance(found.error, str)
        and storable(found.error)
        and len(found.error) <= MAX_ERROR_CHARS
    )
    assert found.time is None or isinstance(found.time, float)


# ------------------------------------------------------------------------------ Kafka


@FAST
@given(st.binary(max_size=2048))
def test_any_bytes_are_a_record_or_a_counted_rejection(value: bytes) -> None:
    check_record(parse(value, MAX_BYTES))


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["Filename", "Error", "Inode", "CompleteTime", "RequestTime", "x"]),
        field_values,
    ),
    st.booleans(),
)
def test_any_json_object_is_a_record_or_a_counted_rejection(
    fields: dict[str, Any], ascii_only: bool
) -> None:
    check_record(
        parse(
            json.dumps(fields, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"), MAX_BYTES
        )
    )


@FAST
@given(
    path=st.text(min_size=1, max_size=300).filter(storable),
    error=st.text(max_size=3000),
    when=st.text(max_size=40)
    | st.datetimes().map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S +0000 GMT")),
)
def test_a_valid_message_gives_its_arrival(path: str, error: str, when: str) -> None:
    message = {"Inode": 7, "Filename": path, "Error": error, "CompleteTime": when}
    found = parse(json.dumps(message).encode(), 1 << 20)
    assert isinstance(found, Arrival) and found.path == path
    check_record(found)
    if error and storable(error):
        assert found.error == error[:MAX_ERROR_CHARS]


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=200_000), st.sampled_from("[{"))
def test_deep_nesting_is_a_rejection(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    inner = '"a":' if opener == "{" else ""
    text = (opener + inner) * depth + "1" + closer * depth
    check_record(parse(text.encode(), 1 << 22))


# -------------------------------------------------------------------------- data_files


def check_paths(paths: list[str]) -> None:
    assert paths and len(paths) == len(set(paths))
    for path in paths:
        assert path.startswith("mwa/") and 0 < len(path) <= MAX_PATH_LENGTH
        assert not any(c in path for c in "\x00\r\n")


@FAST
@given(st.text(), st.none() | st.text(), st.none() | st.text())
def test_archive_path_never_raises(filename: str, bucket: str | None, folder: str | None) -> None:
    assert archive_path(filename, bucket, folder).startswith("mwa")


entries = st.fixed_dictionaries(
    {}, optional={"bucket": field_values, "folder": field_values, "gpstime": json_values}
)


@FAST
@given(json_values | st.dictionaries(st.text(max_size=30), entries | json_values, max_size=8))
def test_any_answer_body_gives_valid_paths_or_a_lookup_error(body: Any) -> None:
    try:
        paths = paths_from_body(body)
    except ResolveError as exc:
        assert exc.code in (ReturnCode.LOOKUP_FAILED, ReturnCode.NO_FILES) and exc.message
        return
    check_paths(paths)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4096) | json_values.map(lambda v: json.dumps(v).encode()),
       st.sampled_from([200, 200, 200, 404, 500, 302]))  # fmt: skip
def test_any_answer_bytes_give_paths_or_a_lookup_error(body: bytes, status: int) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=body))
    config = Settings(data_files_url="http://data-files.test/x", data_files_attempts=1)

    async def lookup() -> list[str]:
        async with httpx.AsyncClient(transport=transport) as client:
            return await resolve_observation(client, config, 1_234_500_001)

    try:
        paths = asyncio.run(lookup())
    except ResolveError as exc:
        assert exc.code in (ReturnCode.LOOKUP_FAILED, ReturnCode.NO_FILES)
        return
    assert status == 200
    check_paths(paths)
