"""The file-list ConfigMap format (mwa_staging.filelists): written by the gateway, read by
the operator, written by hand with kubectl."""

from __future__ import annotations

import base64
import gzip
import random
from typing import Any

import pytest

from mwa_staging import filelists
from mwa_staging.filelists import FileListError, configmap_payloads, read_all

LIMITS = {"max_bytes": 64 * 1024 * 1024, "max_paths": 1_000_000}


def as_configmaps(payloads: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [
        {"metadata": {"name": f"cm{i}", "labels": {filelists.LABEL: "true"}}, "binaryData": data}
        for i, data in enumerate(payloads)
    ]


def test_100000_typical_paths_fit_one_configmap_and_read_back_in_order() -> None:
    paths = [f"mwa/1234567890/1234567890_{i // 24:05d}_ch{i % 24:03d}.fits" for i in range(100_000)]
    payloads = configmap_payloads(paths)
    assert len(payloads) == 1
    encoded = sum(len(v) for v in payloads[0].values())
    assert encoded < 1024 * 1024 - 64 * 1024, "base64 stays well below the 1 MiB object limit"
    assert read_all(as_configmaps(payloads), **LIMITS) == paths


def test_incompressible_lists_are_split_below_the_object_limit() -> None:
    rng = random.Random(7)
    paths = [f"mwa/{rng.getrandbits(128):032x}/{rng.getrandbits(256):064x}" for i in range(40_000)]
    payloads = configmap_payloads(paths)
    assert len(payloads) > 1
    for data in payloads:
        assert sum(len(v) for v in data.values()) < 1024 * 1024 - 64 * 1024
        assert all(len(base64.b64decode(v)) <= filelists.MAX_PART_BYTES for v in data.values())
    assert read_all(as_configmaps(payloads), **LIMITS) == paths


def test_text_and_gzip_keys_in_name_order_empty_lines_and_duplicates_skipped() -> None:
    cm = {
        "metadata": {"name": "mixed", "labels": {filelists.LABEL: "true"}},
        "data": {"b.txt": "c\r\nd\n\n", "a.txt": "a\nb\n"},
        "binaryData": {"c.gz": base64.b64encode(gzip.compress(b"e\na\n")).decode()},
    }
    assert read_all([cm], **LIMITS) == ["a", "b", "c", "d", "e"]


def test_unlabelled_configmap_is_refused() -> None:
    cm = {"metadata": {"name": "app-config", "labels": {}}, "data": {"x": "secret-ish\n"}}
    with pytest.raises(FileListError, match="app-config is not a file list"):
        read_all([cm], **LIMITS)


@pytest.mark.parametrize(
    ("binary", "message"),
    [
        ("not base64!", "is not base64"),
        (base64.b64encode(b"plain, not gzip").decode(), "is not valid gzip"),
        (base64.b64encode(gzip.compress(b"a\n")[:-6]).decode(), "truncated"),
        (base64.b64encode(gzip.compress(b"\xff\xfe\n")).decode(), "is not UTF-8"),
    ],
)
def test_bad_data_names_the_key(binary: str, message: str) -> None:
    cm = {
        "metadata": {"name": "bad", "labels": {filelists.LABEL: "true"}},
        "binaryData": {"k": binary},
    }
    with pytest.raises(FileListError, match=message) as err:
        read_all([cm], **LIMITS)
    assert "ConfigMap bad key k" in str(err.value)


def test_a_gzip_bomb_is_refused_without_inflating_it() -> None:
    bomb = base64.b64encode(gzip.compress(b"a" * (50 * 1024 * 1024))).decode()
    cm = {
        "metadata": {"name": "bomb", "labels": {filelists.LABEL: "true"}},
        "binaryData": {"k": bomb},
    }
    with pytest.raises(FileListError, match="more than 1048576 bytes"):
        read_all([cm], max_bytes=1024 * 1024, max_paths=10)


def test_path_count_limit() -> None:
    cm = {
        "metadata": {"name": "many", "labels": {filelists.LABEL: "true"}},
        "data": {"k": "a\nb\nc\n"},
    }
    with pytest.raises(FileListError, match="more than 2 paths"):
        read_all([cm], max_bytes=1024, max_paths=2)
