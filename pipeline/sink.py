"""Output store with a commit protocol: a unit's rows appear once, whole, or not at all.

Layout under the output URI::

    masks/<unit_id>.parquet     published data files (the dataset users read)
    _commits/<unit_id>.json     commit records; a unit is committed when both files exist
    _claims/<key>.json          which unit owns each (video_id, object_id) (pipeline.claims)
    _staging/                   files being written on a local disk (renamed away when done)
    failures/failures.parquet   units that failed for good and are not labeled yet
    rejects/rejects.parquet     manifest entries that were rejected
    summary.json                the last run's summary

Committing a unit: the data is serialized first; the commit record is written
next; the data file then appears in ``masks/`` in one step -- on a local disk
by renaming a file written under ``_staging/`` (atomic), on object stores by
one upload of the whole file (an object appears only when its upload
completes). So every file in ``masks/`` already has its commit record: a
plain ``pyarrow.dataset`` over ``masks/`` sees only committed units, and a
crash leaves at most a record without data (not committed; the retry writes
the same names) or a file under ``_staging/`` (never read). ``read_masks``
and resume trust only units with both files. Every other file here is also
written whole (staging name then rename locally, one upload elsewhere).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import posixpath
import re
import uuid
from dataclasses import asdict, fields
from urllib.parse import urlsplit

import fsspec
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.manifest import Reject
from pipeline.masks import MASK_SCHEMA, with_origin_columns
from pipeline.records import RunSummary, UnitFailure, failure_from_row, failures_table
from pipeline.storage import is_local, join, url_to_fs

MASKS_DIR = "masks"
COMMITS_DIR = "_commits"
CLAIMS_DIR = "_claims"
STAGING_DIR = "_staging"
FAILURES_FILE = "failures/failures.parquet"
REJECTS_FILE = "rejects/rejects.parquet"
SUMMARY_FILE = "summary.json"
REJECT_SCHEMA = pa.schema(
    [pa.field(f.name, pa.string()) for f in fields(Reject)] + [pa.field("manifest", pa.string())]
)
_UNIT_ID = re.compile(r"[A-Za-z0-9-][A-Za-z0-9._-]{0,199}")  # no leading "." or "_"


class OutputStore:
    """Reads and writes one run's output folder (local path or fsspec URL)."""

    def __init__(self, output_uri: str, storage_options: dict | None = None):
        self.output_uri = output_uri
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = url_to_fs(output_uri, self.storage_options)

    # ------------------------------------------------------------ paths

    def data_path(self, unit_id: str) -> str:
        """Published data file of a unit (a path on ``self.fs``)."""
        return join(self.root, MASKS_DIR, f"{_check_unit_id(unit_id)}.parquet")

    def commit_path(self, unit_id: str) -> str:
        return join(self.root, COMMITS_DIR, f"{_check_unit_id(unit_id)}.json")

    # ------------------------------------------------------------ commits

    def committed_units(self) -> set[str]:
        """Ids of every unit with both a commit record and a data file (listings re-read,
        never cached; records first, so a data file seen has its record listed too)."""
        records = self._names(COMMITS_DIR, ".json")
        return records & self._names(MASKS_DIR, ".parquet")

    def is_committed(self, unit_id: str) -> bool:
        paths = (self.commit_path(unit_id), self.data_path(unit_id))
        for path in paths:
            self.fs.invalidate_cache(posixpath.dirname(path))
        return all(self.fs.exists(path) for path in paths)

    def read_commit(self, unit_id: str) -> dict:
        """The commit record of a unit (FileNotFoundError if it has none)."""
        with self.fs.open(self.commit_path(unit_id), "rb") as handle:
            return json.loads(handle.read())

    def commit_unit(self, unit_id: str, table: pa.Table, metadata: dict) -> str:
        """Write a unit's commit record, then publish its mask rows in one step; returns the
        data file's path. See the module docstring for why the record goes first.

        ``table`` must hold MASK_SCHEMA's columns (extra columns are an error).
        Committing the same unit again overwrites the same two names.
        """
        final = self.data_path(unit_id)
        table = _as_mask_table(table, unit_id)
        data = _parquet_bytes(table)
        record = {
            "unit_id": unit_id,
            "data_file": posixpath.relpath(final, self.root),
            "rows": table.num_rows,
            "committed_at": dt.datetime.now(dt.UTC).isoformat(),
            "metadata": metadata,
        }
        if not is_local(self.fs):
            self._write_bytes(self.commit_path(unit_id), _json_bytes(record))
            self.fs.pipe_file(final, data)  # one upload: the object appears whole
            return final
        staging = self._stage(data, f"{unit_id}.parquet")
        try:
            self._write_bytes(self.commit_path(unit_id), _json_bytes(record))
            os.makedirs(posixpath.dirname(final), exist_ok=True)
            os.replace(staging, final)  # atomic, replaces an earlier file of the same unit
        finally:
            _remove_quietly(staging)
        return final

    def remove_uncommitted_data(self) -> list[str]:
        """Delete data files in ``masks/`` that have no commit record; returns their unit ids.

        Such files are left only by writers older than this protocol (which published data
        before the record): a plain ``pyarrow.dataset`` reader would count their rows.
        Safe beside running writers: a record is written before its data file appears and
        is never removed, so a data file without a record cannot belong to one.
        """
        removed = []
        for unit_id in sorted(
            self._names(MASKS_DIR, ".parquet") - self._names(COMMITS_DIR, ".json")
        ):
            record = self.commit_path(unit_id)
            self.fs.invalidate_cache(posixpath.dirname(record))
            if not self.fs.exists(record):
                self.fs.rm(self.data_path(unit_id))
                removed.append(unit_id)
        return removed

    # ------------------------------------------------------------ exclusive create

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create `path` holding `data` only if nothing is there; True if this call created it.

        The file appears whole or not at all. Local disk: a file written beside is hard-linked
        to `path` (``link`` fails when `path` exists; atomic on POSIX filesystems). S3: a
        conditional PUT (``If-None-Match: *``), atomic on AWS S3 and on stores that honour
        the header; a store that ignores it overwrites silently. Other fsspec stores: their
        ``pipe_file(mode="create")``.
        """
        if is_local(self.fs):
            staging = self._stage(data, posixpath.basename(path))
            try:
                os.makedirs(posixpath.dirname(path), exist_ok=True)
                os.link(staging, path)
            except FileExistsError:
                return False
            finally:
                _remove_quietly(staging)
            return True
        try:
            self.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        return True

    def read_json(self, path: str) -> dict | None:
        """A JSON file's content, or None when it does not exist (listing cache bypassed)."""
        self.fs.invalidate_cache(posixpath.dirname(path))
        try:
            return json.loads(self.fs.cat_file(path))
        except FileNotFoundError:
            return None

    def remove(self, path: str) -> None:
        """Delete a file; a missing one is not an error."""
        try:
            self.fs.rm(path)
        except FileNotFoundError:
            pass

    # ------------------------------------------------------------ run-level tables

    def read_failures(self) -> list[UnitFailure]:
        """The units listed in failures/ (empty when there is none)."""
        return [failure_from_row(row) for row in self._read_rows(FAILURES_FILE)]

    def write_failures(self, failures: list[UnitFailure]) -> None:
        """Replace failures/ with these units; none removes it."""
        path = join(self.root, FAILURES_FILE)
        if not failures:
            self.remove(path)
            return
        self._write_bytes(path, _parquet_bytes(failures_table(failures)))

    def read_rejects(self) -> list[dict]:
        """The rows of rejects/ (empty when there is none)."""
        return self._read_rows(REJECTS_FILE)

    def write_rejects(self, rejects: list[Reject], manifest: str) -> None:
        """Replace `manifest`'s rows in rejects/ with these rejects; rows from other manifests
        stay, so that labeling other videos into the output loses none (rows written before
        the ``manifest`` column existed are replaced too)."""
        kept = [row for row in self.read_rejects() if row.get("manifest") not in (None, manifest)]
        rows = kept + [{**asdict(reject), "manifest": manifest} for reject in rejects]
        rows = [{name: row.get(name) for name in REJECT_SCHEMA.names} for row in rows]
        table = pa.Table.from_pylist(rows, schema=REJECT_SCHEMA)
        self._write_bytes(join(self.root, REJECTS_FILE), _parquet_bytes(table))

    def write_summary(self, summary: RunSummary) -> None:
        """Write summary.json."""
        self._write_bytes(join(self.root, SUMMARY_FILE), summary.to_json())

    # ------------------------------------------------------------ reading and writing

    def _names(self, folder: str, suffix: str) -> set[str]:
        """Unit ids named by the files ending in `suffix` in `folder` (fresh listing)."""
        path = join(self.root, folder)
        self.fs.invalidate_cache(path)
        try:
            names = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return set()
        units = set()
        for name in names:
            base = posixpath.basename(name)
            if base.endswith(suffix) and _UNIT_ID.fullmatch(base[: -len(suffix)]):
                units.add(base[: -len(suffix)])
        return units

    def _read_rows(self, relative: str) -> list[dict]:
        path = join(self.root, relative)
        self.fs.invalidate_cache(posixpath.dirname(path))
        try:
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            return []
        return pq.read_table(pa.BufferReader(data)).to_pylist()

    def _stage(self, data: bytes, name: str) -> str:
        """Write `data` under a unique name in the local ``_staging/`` folder, flushed to disk."""
        folder = join(self.root, STAGING_DIR)
        os.makedirs(folder, exist_ok=True)
        path = join(folder, f"{name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(path, "xb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            _remove_quietly(path)
            raise
        return path

    def _write_bytes(self, path: str, data: bytes) -> None:
        """Write a whole file atomically: staged then renamed locally, one upload elsewhere."""
        if not is_local(self.fs):
            self.fs.pipe_file(path, data)
            return
        staging = self._stage(data, posixpath.basename(path))
        try:
            os.makedirs(posixpath.dirname(path), exist_ok=True)
            os.replace(staging, path)
        finally:
            _remove_quietly(staging)


def read_masks(output_uri: str, storage_options: dict | None = None) -> pa.Table:
    """All mask rows of committed units, sorted by (video_id, object_id, frame_index).
    Units written before the origin columns existed read with them filled
    (:func:`pipeline.masks.with_origin_columns`).

    Reads through pyarrow's own filesystem where there is one (local, S3): pyarrow's
    I/O threads then never call into Python, which through ``PyFileSystem(FSSpecHandler)``
    could still be running at interpreter exit and abort the process ("terminate called
    without an active exception"). Other stores are read whole through fsspec, then parsed.
    """
    store = OutputStore(output_uri, storage_options)
    units = sorted(store.committed_units())
    if not units:
        return MASK_SCHEMA.empty_table()
    paths = [store.data_path(unit) for unit in units]
    filesystem = arrow_filesystem(store.fs, store.storage_options)
    if filesystem is not None:
        dataset = pads.dataset(paths, schema=MASK_SCHEMA, format="parquet", filesystem=filesystem)
        table = with_origin_columns(dataset.to_table())
    else:
        tables = [pq.read_table(pa.BufferReader(store.fs.cat_file(path))) for path in paths]
        table = pa.concat_tables(
            [with_origin_columns(t).select(MASK_SCHEMA.names).cast(MASK_SCHEMA) for t in tables]
        )
    return table.sort_by(
        [("video_id", "ascending"), ("object_id", "ascending"), ("frame_index", "ascending")]
    )


# s3fs options that change nothing about where and as whom pyarrow reads.
_S3_IGNORABLE = {
    "skip_instance_cache",
    "use_listings_cache",
    "listings_expiry_time",
    "max_paths",
    "default_block_size",
    "default_fill_cache",
    "default_cache_type",
    "asynchronous",
    "loop",
    "use_ssl",
}


def arrow_filesystem(
    fs: fsspec.AbstractFileSystem, storage_options: dict | None = None
) -> pafs.FileSystem | None:
    """pyarrow's native filesystem equivalent to `fs` (same paths), or None where there is
    none or the storage options hold settings it cannot take."""
    if is_local(fs):
        return pafs.LocalFileSystem()
    if "s3" not in _protocols(fs):
        return None
    options = dict(storage_options or {})
    client = dict(options.pop("client_kwargs", None) or {})
    region = client.pop("region_name", None) or options.pop("region", None)
    endpoint = client.pop("endpoint_url", None) or options.pop("endpoint_url", None)
    arguments: dict = {}
    if endpoint:
        parts = urlsplit(endpoint)
        arguments["endpoint_override"] = parts.netloc or parts.path
        arguments["scheme"] = parts.scheme or "https"
    if region:
        arguments["region"] = region
    if options.pop("anon", False):
        arguments["anonymous"] = True
    for ours, theirs in (
        ("key", "access_key"),
        ("secret", "secret_key"),
        ("token", "session_token"),
    ):
        if options.get(ours) is not None:
            arguments[theirs] = options.pop(ours)
    if client or set(options) - _S3_IGNORABLE:
        return None
    return pafs.S3FileSystem(**arguments)


def _protocols(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def _check_unit_id(unit_id: str) -> str:
    if not isinstance(unit_id, str) or not _UNIT_ID.fullmatch(unit_id):
        raise ValueError(
            f"unit id {unit_id!r} must be 1-200 characters of letters, digits, '.', '_' or '-', "
            "not starting with '.' or '_' (readers skip such files)"
        )
    return unit_id


def _as_mask_table(table: pa.Table, unit_id: str) -> pa.Table:
    names = set(table.column_names)
    expected = set(MASK_SCHEMA.names)
    if names != expected:
        raise ValueError(
            f"unit {unit_id}: table columns differ from MASK_SCHEMA "
            f"(missing {sorted(expected - names)}, unexpected {sorted(names - expected)})"
        )
    try:
        return with_origin_columns(table).select(MASK_SCHEMA.names).cast(MASK_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as error:
        raise ValueError(f"unit {unit_id}: table does not fit MASK_SCHEMA ({error})") from error


def _parquet_bytes(table: pa.Table) -> bytes:
    """A whole Parquet file in memory: serialized before any upload starts, so a failure
    half-way never leaves part of a file behind."""
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    return buffer.getvalue().to_pybytes()


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _json_bytes(value: dict) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True, default=str).encode("utf-8")
