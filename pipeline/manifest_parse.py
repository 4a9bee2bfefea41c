"""Manifest files into raw entries: JSON Lines, one JSON document, CSV and Parquet rows.

Only the syntax lives here: bytes in, one :class:`Entry` per video out (its
parsed value in the JSON Lines layout, or the problems that keep it from being
read). :mod:`pipeline.manifest` validates entries into jobs. Whatever a line,
cell or row holds -- malformed or deeply nested JSON, numbers too long to
read, very long CSV cells -- becomes a problem of that one entry; only what
makes every row unreadable (a wrong table header, a CSV that is not UTF-8)
raises ValueError.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

TABLE_COLUMNS = (
    "video",
    "video_id",
    "object_id",
    "frame",
    "points",
    "labels",
    "box",
    "mask_rle",
    "score",  # with object_id empty: the row is a precomputed detection (pipeline.detections)
    "category",
)
TABLE_REQUIRED = ("video", "object_id", "frame")
TABLE_JSON_COLUMNS = ("points", "labels", "box", "mask_rle")
# Deepest nesting a valid entry needs is 7 (line, objects, object, prompts, prompt, points, pair);
# anything far deeper is refused before validation, whose messages re-encode values recursively.
MAX_DEPTH = 20
NO_VALUE = object()  # Entry.value when nothing could be parsed (a JSON `null` is a value: None)


class Invalid(Exception):
    """A single problem inside one entry (turned into a Reject by pipeline.manifest)."""

    def __init__(self, field: str, reason: str, location: str | None = None):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.location = location  # set for table rows; None means the entry's own location


@dataclass
class Entry:
    """One video's raw description before validation, or the problems that prevent building it."""

    location: str
    raw: str
    value: Any = NO_VALUE  # parsed value in the JSON Lines layout
    problems: list[Invalid] = field(default_factory=list)
    # (object index, prompt index) -> row location (tables); (object index, "category") -> the
    # row that first gave the object's category
    locations: dict | None = None
    row_raws: dict | None = None  # row location -> that row as JSON text (tables)


def parse_json(text: str, where: str) -> Any:
    """``text`` as JSON, or Invalid(where, ...) for malformed, too deeply nested or unreadable text.

    NaN and Infinity literals are accepted here; validation refuses them where a number is due.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise Invalid(where, f"malformed JSON: {error}") from None
    except RecursionError:
        raise Invalid(where, f"nested too deeply (at most {MAX_DEPTH} levels)") from None
    except ValueError as error:  # e.g. an integer longer than Python's digit limit
        raise Invalid(where, f"unreadable JSON: {error}") from None
    if _depth_over(value, MAX_DEPTH):
        raise Invalid(where, f"nested too deeply (at most {MAX_DEPTH} levels)")
    return value


def _depth_over(value: Any, limit: int) -> bool:
    """True when lists/dicts nest more than ``limit`` levels (iterative: no recursion limit)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in item if isinstance(child, (list, dict)))
    return False


def _without_bom(data: bytes) -> bytes:
    return data[len(codecs.BOM_UTF8) :] if data.startswith(codecs.BOM_UTF8) else data


def jsonl_entries(data: bytes, name: str) -> list[Entry]:
    """One entry per non-blank line ("m.jsonl line N", physical line numbers); a BOM is ignored."""
    entries = []
    for number, line in enumerate(_without_bom(data).split(b"\n"), start=1):
        location = f"{name} line {number}"
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError as error:
            raw = line.decode("utf-8", errors="replace")
            entries.append(Entry(location, raw, problems=[Invalid("line", f"not UTF-8 ({error})")]))
            continue
        if not text:
            continue
        try:
            entries.append(Entry(location, text, value=parse_json(text, "line")))
        except Invalid as problem:
            entries.append(Entry(location, text, problems=[problem]))
    return entries


def json_document_entries(data: bytes, name: str) -> list[Entry]:
    """A ``.json`` file read as one document: an array of videos ("m.json item N", from 1) or one
    video object ("m.json").

    A file holding several JSON values one per line is read as JSON Lines instead; any other
    unreadable document is one problem naming the file (with the parser's line and column).
    """
    try:
        text = _without_bom(data).decode("utf-8")
    except UnicodeDecodeError:
        return jsonl_entries(data, name)
    if not text.strip():
        return []
    try:
        value = parse_json(text, "file")
    except Invalid as problem:
        as_lines = jsonl_entries(data, name)
        if "Extra data" in problem.reason or sum(isinstance(e.value, dict) for e in as_lines) >= 2:
            return as_lines
        return [Entry(name, text.strip(), problems=[problem])]
    if isinstance(value, list):
        return [
            Entry(f"{name} item {number}", json.dumps(item), value=item)
            for number, item in enumerate(value, start=1)
        ]
    return [Entry(name, text.strip(), value=value)]


def csv_rows(data: bytes, name: str) -> list[tuple[str, dict]]:
    """(location, row) per non-blank data row ("p.csv row N", N counting data rows from 1).

    A row that cannot be split into the header's cells carries ``__problem__``.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"manifest {name}: not UTF-8 text ({error})") from error
    # The csv module stops at cells over 131072 characters, and after that error it resumes
    # mid-record (a quoted cell's newline starts a "row"); no cell is longer than the file.
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text) + 1))
    try:
        return _csv_records(csv.reader(io.StringIO(text, newline="")), name)
    finally:
        csv.field_size_limit(limit)


def _csv_records(reader, name: str) -> list[tuple[str, dict]]:
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise ValueError(f"manifest {name}: unreadable CSV header ({error})") from error
    if header is None:
        return []
    header = [column.strip() for column in header]
    check_columns(header, name)
    video_column = header.index("video")
    rows = []
    number = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as error:  # not expected with the limit lifted; the reader goes on
            number += 1
            problem = f"unreadable CSV ({error})"
            rows.append((f"{name} row {number}", {"__problem__": problem, "__raw__": []}))
            continue
        if not any(cell.strip() for cell in cells):
            continue
        number += 1
        location = f"{name} row {number}"
        if len(cells) != len(header):
            problem = f"{len(cells)} cells, header has {len(header)}"
            video = cells[video_column] if len(cells) > video_column else None
            rows.append((location, {"__problem__": problem, "__raw__": cells, "video": video}))
            continue
        row = {column: (cell if cell.strip() else None) for column, cell in zip(header, cells)}
        rows.append((location, row))
    return rows


def parquet_rows(table: pa.Table, name: str) -> list[tuple[str, dict]]:
    """(location, row) per Parquet row ("p.parquet row N", from 1)."""
    check_columns(table.column_names, name)
    return [(f"{name} row {number}", row) for number, row in enumerate(table.to_pylist(), start=1)]


def check_columns(columns: list[str], name: str) -> None:
    """Raise ValueError for unknown, missing required or repeated table columns."""
    unknown = [column for column in columns if column not in TABLE_COLUMNS]
    if unknown:
        raise ValueError(
            f"manifest {name}: unknown column(s) {unknown} (allowed: {', '.join(TABLE_COLUMNS)})"
        )
    missing = [column for column in TABLE_REQUIRED if column not in columns]
    if missing:
        raise ValueError(f"manifest {name}: missing required column(s) {missing}")
    duplicated = sorted({column for column in columns if columns.count(column) > 1})
    if duplicated:
        raise ValueError(f"manifest {name}: repeated column(s) {duplicated}")


def group_rows(rows: list[tuple[str, dict]]) -> list[Entry]:
    """Group one-prompt rows into per-video entries in the JSON Lines layout (first-seen order).
    A row with ``object_id`` empty and a ``score`` is a detection instead (the entry's
    ``detections`` list, :mod:`pipeline.detections`).

    A row whose cells do not match the header still rejects the video named in
    its video cell (when there is one), so no video is labeled with prompts missing.
    """
    entries: list[Entry] = []
    groups: dict[str, Entry] = {}
    for location, row in rows:
        raw = json.dumps(row.get("__raw__", row), default=str)
        video = row.get("video")
        if "__problem__" in row and not (isinstance(video, str) and video.strip()):
            problem = Invalid("row", row["__problem__"], location=location)
            entries.append(Entry(location, raw, problems=[problem]))
            continue
        key = video if isinstance(video, str) and video.strip() else f"\0{location}"
        entry = groups.get(key)
        if entry is None:
            value = {"video": video}
            entry = Entry(location, "", value=value, locations={}, row_raws={})
            groups[key] = entry
            entries.append(entry)
        entry.raw = f"{entry.raw}\n{raw}" if entry.raw else raw
        entry.row_raws[location] = raw
        if "__problem__" in row:
            problem = Invalid("row", row["__problem__"], location=location)
        else:
            problem = _row_into_entry(entry, location, row)
        if problem is not None:
            entry.problems.append(problem)
    return entries


def _row_into_entry(entry: Entry, location: str, row: dict) -> Invalid | None:
    value = entry.value
    video_id = row.get("video_id")
    if video_id is not None:
        if "video_id" in value and value["video_id"] != video_id:
            return Invalid(
                "video_id",
                location=location,
                reason=f"{video_id!r} differs from {value['video_id']!r} given for the same video",
            )
        value["video_id"] = video_id
    prompt: dict[str, Any] = {"frame": _table_int(row.get("frame"))}
    for column in TABLE_JSON_COLUMNS:
        cell = row.get(column)
        if isinstance(cell, str):
            try:
                cell = parse_json(cell, column)
            except Invalid as problem:
                problem.location = location
                return problem
        elif _depth_over(cell, MAX_DEPTH):
            return Invalid(column, f"nested too deeply (at most {MAX_DEPTH} levels)", location)
        if cell is not None:
            prompt["mask" if column == "mask_rle" else column] = cell
    object_id = _table_int(row.get("object_id"))
    if object_id is None and row.get("score") is not None:
        return _detection_row(entry, location, row, prompt)
    if row.get("score") is not None:
        reason = "belongs to detection rows (score given, object_id empty) only"
        return Invalid("score", reason, location)
    objects = value.setdefault("objects", [])
    object_index = next(
        (index for index, spec in enumerate(objects) if spec["object_id"] == object_id), None
    )
    if object_index is None:
        object_index = len(objects)
        objects.append({"object_id": object_id, "prompts": []})
    category = row.get("category")
    if category is not None:  # any row of the object may give it; two rows may not differ
        given = objects[object_index].get("category")
        if given is not None and given != category:
            reason = f"{category!r} differs from {given!r} given for the same object"
            return Invalid("category", location=location, reason=reason)
        if given is None:
            objects[object_index]["category"] = category
            entry.locations[(object_index, "category")] = location
    objects[object_index]["prompts"].append(prompt)
    entry.locations[(object_index, len(objects[object_index]["prompts"]) - 1)] = location
    return None


def _detection_row(entry: Entry, location: str, row: dict, prompt: dict) -> Invalid | None:
    """A detection row (object_id empty, score given) into the entry's ``detections`` list, in
    the JSON layout of :mod:`pipeline.detections` (``box`` as x1, y1, x2, y2, as for prompts)."""
    score = row["score"]
    if isinstance(score, str):
        try:
            score = parse_json(score, "score")
        except Invalid as problem:
            problem.location = location
            return problem
    detection = {"frame_index": prompt.pop("frame"), "score": score}
    detection.update(prompt)  # box, and points/labels/mask_rle for validation to refuse
    if row.get("category") is not None:
        detection["category"] = row["category"]
    detections = entry.value.setdefault("detections", [])
    entry.locations[("detections", len(detections))] = location
    detections.append(detection)
    return None


def _table_int(cell: Any) -> Any:
    """Integers from a CSV cell ("12") stay checkable; anything else is passed on for validation."""
    if isinstance(cell, str) and re.fullmatch(r"\s*-?\d{1,30}\s*", cell):
        return int(cell)
    if isinstance(cell, float) and cell.is_integer():
        return int(cell)  # Parquet columns with nulls come back as float
    return cell
