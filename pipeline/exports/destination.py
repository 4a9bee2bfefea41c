"""Where an export writes: a folder on any fsspec filesystem (local path, ``s3://``, ...).

Files are written as streams (``fs.open(path, "wb")``: a multipart upload on
S3), so a large JSON document never has to exist in memory whole.
"""

from __future__ import annotations

import io
import json
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from pipeline.storage import is_local, join, url_to_fs


def safe_name(video_id: str) -> str:
    """A video id used as a file or folder name; ids that would escape the folder are refused."""
    if not video_id or video_id in (".", "..") or any(c in video_id for c in "/\\\0"):
        raise ValueError(
            f"video id {video_id!r} cannot name a file in the export (empty, '.', '..', or "
            "contains '/', '\\' or NUL)"
        )
    return video_id


class Destination:
    """An export's output folder; counts the files it writes."""

    def __init__(self, uri: str, storage_options: dict | None = None):
        self.uri = uri
        self.fs, self.root = url_to_fs(uri, storage_options)
        self.files_written = 0

    def path(self, relative: str) -> str:
        return join(self.root, relative)

    def _open(self, relative: str):
        path = self.path(relative)
        if is_local(self.fs):
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        self.files_written += 1
        return self.fs.open(path, "wb")

    @contextmanager
    def open_text(self, relative: str) -> Iterator[TextIO]:
        """A UTF-8 text stream to ``relative`` under the folder."""
        with self._open(relative) as raw, io.TextIOWrapper(raw, encoding="utf-8") as text:
            yield text

    def write_bytes(self, relative: str, data: bytes) -> None:
        with self._open(relative) as handle:
            handle.write(data)

    def write_json(self, relative: str, value: object) -> None:
        self.write_bytes(relative, compact_json(value).encode("utf-8"))


def compact_json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


class JsonArrayStream:
    """Writes ``"key": [item, item, ...]`` into an open JSON object one item at a time
    (``key`` None: a bare top-level array)."""

    def __init__(self, out: TextIO, key: str | None):
        self._out = out
        self._first = True
        out.write("[" if key is None else ",\n" + json.dumps(key) + ": [")

    def append(self, item: object) -> None:
        self._out.write(("\n" if self._first else ",\n") + compact_json(item))
        self._first = False

    def close(self) -> None:
        self._out.write("\n]")
