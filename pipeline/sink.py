"""Output store with a commit protocol: a unit's rows appear once, whole, or not at all.

Layout under the output URI::

    masks/<unit_id>.parquet     published data files (the dataset users read)
    _commits/<unit_id>.json     commit records, written last; readers trust only these
    _staging/                   data files being written (local disks only; removed on publish)
    failures/failures.parquet   units that failed permanently in the last run
    rejects/rejects.parquet     manifest entries that were rejected
    summary.json                the last run's summary

Publishing a unit: on a local disk the data file is written under a unique
staging name outside ``masks/`` and renamed into place (atomic); on object
stores it is written straight to its final key, because an object appears
only when its upload completes (a single PUT, or a multipart upload that is
completed). The commit record goes last. A crash before the record leaves
either nothing or a complete file that the retry overwrites under the same
name, so re-running converges without duplicates. ``read_masks`` reads only
committed units; ``pyarrow.dataset`` on ``masks/`` never sees staging files
(they live outside it) but may see a complete file whose commit record a
crash prevented, until the unit is re-run.
"""

from __future__ import annotations

import datetime as dt
import json
import posixpath
import re
import uuid
from dataclasses import asdict, fields

import fsspec
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pyarrow.fs import FSSpecHandler, PyFileSystem

from pipeline.manifest import Reject
from pipeline.masks import MASK_SCHEMA
from pipeline.storage import is_local, join, url_to_fs

MASKS_DIR = "masks"
COMMITS_DIR = "_commits"
STAGING_DIR = "_staging"
FAILURES_FILE = "failures/failures.parquet"
REJECTS_FILE = "rejects/rejects.parquet"
SUMMARY_FILE = "summary.json"
REJECT_SCHEMA = pa.schema([pa.field(f.name, pa.string()) for f in fields(Reject)])
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
        """Ids of every unit with a commit record (listing is re-read, never cached)."""
        folder = join(self.root, COMMITS_DIR)
        self.fs.invalidate_cache(folder)
        try:
            names = self.fs.ls(folder, detail=False)
        except FileNotFoundError:
            return set()
        units = set()
        for name in names:
            base = posixpath.basename(name)
            if base.endswith(".json") and _UNIT_ID.fullmatch(base[: -len(".json")]):
                units.add(base[: -len(".json")])
        return units

    def is_committed(self, unit_id: str) -> bool:
        path = self.commit_path(unit_id)
        self.fs.invalidate_cache(posixpath.dirname(path))
        return self.fs.exists(path)

    def read_commit(self, unit_id: str) -> dict:
        """The commit record of a unit (FileNotFoundError if it is not committed)."""
        with self.fs.open(self.commit_path(unit_id), "rb") as handle:
            return json.loads(handle.read())

    def commit_unit(self, unit_id: str, table: pa.Table, metadata: dict) -> str:
        """Publish a unit's mask rows, then its commit record; returns the data file's path.

        ``table`` must hold MASK_SCHEMA's columns (extra columns are an error).
        Committing the same unit again overwrites the same two names.
        """
        final = self.data_path(unit_id)
        table = _as_mask_table(table, unit_id)
        if is_local(self.fs):
            staging = join(self.root, STAGING_DIR, f"{unit_id}.{uuid.uuid4().hex}.parquet")
            self.fs.makedirs(posixpath.dirname(staging), exist_ok=True)
            self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
            try:
                self._write_parquet(staging, table)
                self.fs.mv(staging, final)  # os.rename: atomic, replaces an earlier file
            finally:
                if self.fs.exists(staging):
                    self.fs.rm(staging)
        else:
            self._write_parquet(final, table)
        record = {
            "unit_id": unit_id,
            "data_file": posixpath.relpath(final, self.root),
            "rows": table.num_rows,
            "committed_at": dt.datetime.now(dt.UTC).isoformat(),
            "metadata": metadata,
        }
        self._write_bytes(self.commit_path(unit_id), _json_bytes(record))
        return final

    # ------------------------------------------------------------ run-level tables

    def write_failures(self, rows: list[dict]) -> None:
        """Replace failures/ with these rows (the run's permanent failures); none removes it."""
        path = join(self.root, FAILURES_FILE)
        if not rows:
            if self.fs.exists(path):
                self.fs.rm(path)
            return
        self._write_parquet(path, _rows_table(rows))

    def write_rejects(self, rejects: list[Reject]) -> None:
        """Replace rejects/ with these manifest rejects (an empty table when there are none)."""
        table = pa.Table.from_pylist([asdict(reject) for reject in rejects], schema=REJECT_SCHEMA)
        self._write_parquet(join(self.root, REJECTS_FILE), table)

    def write_summary(self, summary: dict) -> None:
        """Write summary.json (values that JSON lacks are written as text)."""
        self._write_bytes(join(self.root, SUMMARY_FILE), _json_bytes(summary))

    # ------------------------------------------------------------ writing

    def _write_parquet(self, path: str, table: pa.Table) -> None:
        if is_local(self.fs):
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            with self.fs.open(path, "wb") as handle:
                pq.write_table(table, handle)
            return
        # Serialize fully before the upload starts: a file object would upload what it holds
        # even when writing fails half-way, while one pipe_file is a single complete object.
        buffer = pa.BufferOutputStream()
        pq.write_table(table, buffer)
        self.fs.pipe_file(path, buffer.getvalue().to_pybytes())

    def _write_bytes(self, path: str, data: bytes) -> None:
        if is_local(self.fs):
            # write beside, then rename: a reader never sees half a file
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            temporary = f"{path}.{uuid.uuid4().hex}.tmp"
            with self.fs.open(temporary, "wb") as handle:
                handle.write(data)
            self.fs.mv(temporary, path)
        else:
            self.fs.pipe_file(path, data)


def read_masks(output_uri: str, storage_options: dict | None = None) -> pa.Table:
    """All mask rows of committed units, sorted by (video_id, object_id, frame_index)."""
    store = OutputStore(output_uri, storage_options)
    units = sorted(store.committed_units())
    if not units:
        return MASK_SCHEMA.empty_table()
    paths = [store.data_path(unit) for unit in units]
    dataset = pads.dataset(
        paths, schema=MASK_SCHEMA, format="parquet", filesystem=_arrow_fs(store.fs)
    )
    table = dataset.to_table()
    return table.sort_by(
        [("video_id", "ascending"), ("object_id", "ascending"), ("frame_index", "ascending")]
    )


def _arrow_fs(fs: fsspec.AbstractFileSystem) -> PyFileSystem:
    return PyFileSystem(FSSpecHandler(fs))


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
        return table.select(MASK_SCHEMA.names).cast(MASK_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as error:
        raise ValueError(f"unit {unit_id}: table does not fit MASK_SCHEMA ({error})") from error


def _rows_table(rows: list[dict]) -> pa.Table:
    """A table from free-form rows: columns are the union of keys; nested values become JSON
    text, and a column whose values disagree in type becomes text."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    columns = {}
    for name in names:
        values = [row.get(name) for row in rows]
        values = [
            json.dumps(value, default=str) if isinstance(value, (dict, list, tuple)) else value
            for value in values
        ]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            columns[name] = pa.array([None if value is None else str(value) for value in values])
    return pa.table(columns)


def _json_bytes(value: dict) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True, default=str).encode("utf-8")
