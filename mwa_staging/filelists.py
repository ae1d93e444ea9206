"""Big file lists outside the StagingJob: the ConfigMaps of ``spec.filesFrom``.

A StagingJob's ``spec.files`` holds at most 10,000 paths, and every status
patch of the object would carry them. A bigger list (the original API takes
100,000 paths in one POST) lives in ConfigMaps that the job names in
``spec.filesFrom``; the operator reads them once, when it records the job's
files, and never again. This module is the one definition of their format,
used by the gateway (which writes them) and the operator (which reads them):

* the ConfigMap carries the label ``staging.mwatelescope.org/file-list: "true"``.
  The operator refuses any other ConfigMap, so a StagingJob cannot be used to
  read a ConfigMap that was never meant as a file list;
* every key of ``data`` is plain text, one path per line; every key of
  ``binaryData`` is the same text gzip-compressed. Keys are read in name order
  (``data`` and ``binaryData`` together), ConfigMaps in the order of
  ``filesFrom``; empty lines are skipped;
* the gateway writes ``binaryData`` keys ``part-NNNN.gz``, each compressed part
  at most :data:`MAX_PART_BYTES` and each ConfigMap at most
  :data:`MAX_CONFIGMAP_BYTES` of raw data, so that base64 keeps every object
  below the API server's 1 MiB limit. 100,000 typical MWA paths (4.3 MB of text)
  compress to about 270 kB: one ConfigMap.

With kubectl, a list file becomes such a ConfigMap with::

    gzip -k files.txt
    kubectl create configmap my-list --from-file=files.txt.gz
    kubectl label configmap my-list staging.mwatelescope.org/file-list=true

(``kubectl create configmap --from-file`` stores non-UTF-8 content, such as gzip,
in ``binaryData``), or uncompressed with ``--from-file=files.txt`` up to 1 MiB.
"""

from __future__ import annotations

import base64
import gzip
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

LABEL = "staging.mwatelescope.org/file-list"
#: Label of the StagingJob's name on its list ConfigMaps (for people and cleanup).
JOB_LABEL = "staging.mwatelescope.org/job-name"
#: Largest compressed part written: base64 makes it 4/3 as large, under 1 MiB.
MAX_PART_BYTES = 600 * 1024
#: Largest sum of parts in one ConfigMap (base64 of it stays below 1 MiB).
MAX_CONFIGMAP_BYTES = 700 * 1024
#: Uncompressed text per part tried first (halved while a part compresses too big).
RAW_PART_BYTES = 8 * 1024 * 1024


class FileListError(ValueError):
    """A file list that cannot be used (the message says which object and why)."""


def _compress(paths: Sequence[str]) -> bytes:
    text = "\n".join(paths).encode() + b"\n"
    return gzip.compress(text, compresslevel=6, mtime=0)


def _raw_chunks(paths: Sequence[str], limit: int) -> Iterator[Sequence[str]]:
    start, size = 0, 0
    for i, path in enumerate(paths):
        size += len(path) + 1
        if size > limit and i > start:
            yield paths[start:i]
            start, size = i, len(path) + 1
    if start < len(paths):
        yield paths[start:]


def compressed_parts(paths: Sequence[str], max_part: int = MAX_PART_BYTES) -> list[bytes]:
    """The paths as gzip parts of at most ``max_part`` bytes each, in order."""
    parts: list[bytes] = []
    pending = list(_raw_chunks(paths, RAW_PART_BYTES))
    while pending:
        chunk = pending.pop(0)
        blob = _compress(chunk)
        if len(blob) <= max_part or len(chunk) == 1:
            parts.append(blob)
            continue
        half = len(chunk) // 2
        pending[0:0] = [chunk[:half], chunk[half:]]
    return parts


def configmap_payloads(
    paths: Sequence[str], max_configmap: int = MAX_CONFIGMAP_BYTES
) -> list[dict[str, str]]:
    """``binaryData`` of each ConfigMap holding ``paths`` (base64 values), in order."""
    payloads: list[dict[str, str]] = []
    current: dict[str, str] = {}
    size = 0
    for number, part in enumerate(compressed_parts(paths)):
        if current and size + len(part) > max_configmap:
            payloads.append(current)
            current, size = {}, 0
        current[f"part-{number:04d}.gz"] = base64.b64encode(part).decode()
        size += len(part)
    if current:
        payloads.append(current)
    return payloads


def _gunzip(blob: bytes, limit: int, where: str) -> bytes:
    """Decompress at most ``limit`` bytes (more is refused: a bomb guard)."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(blob, limit + 1)
    except zlib.error as exc:
        raise FileListError(f"{where} is not valid gzip data: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise FileListError(f"{where} holds more than {limit} bytes of paths")
    if not inflater.eof:
        raise FileListError(f"{where} is truncated gzip data")
    return out


def paths_of(configmap: Mapping[str, Any], *, max_bytes: int, max_paths: int) -> Iterator[str]:
    """The paths of one list ConfigMap (a dict as the API returns it), in order."""
    meta = configmap.get("metadata") or {}
    name = meta.get("name", "?")
    labels = meta.get("labels") or {}
    if labels.get(LABEL) != "true":
        raise FileListError(
            f"ConfigMap {name} is not a file list (it lacks the label {LABEL}=true)"
        )
    data: Mapping[str, str] = configmap.get("data") or {}
    binary: Mapping[str, str] = configmap.get("binaryData") or {}
    budget = max_bytes
    count = 0
    for key in sorted(set(data) | set(binary)):
        where = f"ConfigMap {name} key {key}"
        if key in binary:
            try:
                blob = base64.b64decode(binary[key], validate=True)
            except ValueError:
                raise FileListError(f"{where} is not base64") from None
            raw = _gunzip(blob, budget, where)
        else:
            raw = data[key].encode()
            if len(raw) > budget:
                raise FileListError(f"{where} holds more than {max_bytes} bytes of paths")
        budget -= len(raw)
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise FileListError(f"{where} is not UTF-8 text") from None
        for line in text.split("\n"):
            path = line.rstrip("\r")
            if not path:
                continue
            count += 1
            if count > max_paths:
                raise FileListError(f"the file lists hold more than {max_paths} paths")
            yield path


def read_all(
    configmaps: Iterable[Mapping[str, Any]], *, max_bytes: int, max_paths: int
) -> list[str]:
    """Every path of the ConfigMaps, in order (each path once), limits over them all."""
    seen: dict[str, None] = {}
    budget = max_bytes
    for cm in configmaps:
        for path in paths_of(cm, max_bytes=budget, max_paths=max_paths - len(seen)):
            budget -= len(path) + 1
            if len(path) > 4096 or "\x00" in path:
                raise FileListError(f"a path of ConfigMap {cm['metadata']['name']} is invalid")
            seen.setdefault(path, None)
    return list(seen)
