"""Fault test: hundreds of generated bad manifest lines and rows (seeded) never escape
``read_manifest`` as an exception, and each non-blank line or row ends up exactly once:
as a job or as the location of its reject(s)."""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest

from pipeline.manifest import read_manifest
from pipeline.manifest_parse import TABLE_COLUMNS
from pipeline.masks import encode_mask

SEED = 20240613
LINES = 400
CHARS = "aZ09 ._-/\\\"'{}[]:,\x00\x01\t\r\x1c\u00e9\u5b57\U0001f600\u2028\ufeff\ud800\udfff"

_mask = np.zeros((6, 8), bool)
_mask[1:4, 2:6] = True
MASK_RLE = {"size": [6, 8], "counts": encode_mask(_mask)[0]}


def random_text(rng: random.Random, surrogates: bool = True) -> str:
    pool = CHARS if surrogates else CHARS.replace("\ud800", "").replace("\udfff", "")
    return "".join(rng.choice(pool) for _ in range(rng.randrange(0, 12)))


def random_scalar(rng: random.Random):
    return rng.choice(
        [
            None,
            True,
            False,
            0,
            -1,
            rng.randint(-(10**6), 10**6),
            rng.choice([1, -1]) * 10 ** rng.randint(18, 600),  # past int64, past float
            rng.uniform(-1e4, 1e4),
            float("nan"),
            float("inf"),
            -float("inf"),
            1e39,
            -1e39,
            5e-324,
            random_text(rng),
            "1",
            "",
        ]
    )


def random_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(8 if depth < 4 else 1)
    if kind < 5:
        return random_scalar(rng)
    if kind < 7:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    keys = ["video", "video_id", "objects", "object_id", "prompts", "frame", "points", "labels"]
    keys += ["box", "mask", "size", "counts", random_text(rng)]
    return {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


def valid_prompt(rng: random.Random, frame: int) -> dict:
    choice = rng.randrange(4)
    if choice == 0:
        return {"frame": frame, "points": [[3.5, 2], [100, 80]], "labels": [1, 0]}
    if choice == 1:
        return {"frame": frame, "box": [1, 2, 30.5, 40]}
    if choice == 2:
        return {"frame": frame, "points": [[5, 5]], "labels": [1], "box": [0, 0, 9, 9]}
    return {
        "frame": frame,
        "mask": {"size": [6, 8], "counts": MASK_RLE["counts"]},
    }  # fresh lists: mutate() edits in place


def valid_line(rng: random.Random, index: int) -> dict:
    objects = [
        {"object_id": oid, "prompts": [valid_prompt(rng, f) for f in range(rng.randrange(1, 3))]}
        for oid in range(rng.randrange(1, 3))
    ]
    return {"video": f"/v/{index}.mp4", "objects": objects}


def mutate(rng: random.Random, value: dict) -> dict:
    """Replace, delete or add one field somewhere inside a valid entry."""
    slots = []
    stack = [value]
    while stack:
        node = stack.pop()
        keys = list(node) if isinstance(node, dict) else range(len(node))
        for key in keys:
            slots.append((node, key))
            if isinstance(node[key], (dict, list)):
                stack.append(node[key])
    node, key = rng.choice(slots)
    action = rng.randrange(3)
    if action == 0 or not isinstance(node, dict):
        node[key] = random_value(rng)
    elif action == 1:
        del node[key]
    else:
        node[random_text(rng) or "extra"] = random_value(rng)
    return value


def deep_text(rng: random.Random) -> str:
    depth = rng.choice([25, 990, 3000, 100_000])
    if rng.random() < 0.5:
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def bad_number_text(rng: random.Random, text: str) -> str:
    literal = rng.choice(["NaN", "Infinity", "-Infinity", "9" * 5000, "1e999", "-0", "1" * 300])
    return text.replace("30.5", literal).replace("100", literal, 1)


def jsonl_line(rng: random.Random, index: int) -> tuple[bytes, bool]:
    """One generated line as bytes (never containing a newline) and whether it is valid."""
    kind = rng.randrange(9)
    if kind == 0:
        return json.dumps(valid_line(rng, index)).encode(), True
    if kind == 1:
        return json.dumps(random_value(rng)).encode(), False
    if kind in (2, 3):
        text = json.dumps(mutate(rng, valid_line(rng, index)), ensure_ascii=rng.random() < 0.7)
        return text.encode("utf-8", "surrogatepass"), False  # raw surrogates: not UTF-8
    if kind == 4:
        text = json.dumps(valid_line(rng, index))
        return text[: rng.randrange(1, len(text))].encode(), False
    if kind == 5:
        return deep_text(rng).encode(), False
    if kind == 6:
        return bad_number_text(rng, json.dumps(valid_line(rng, index))).encode(), False
    if kind == 7:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))).replace(
            b"\n", b""
        ), False
    late = valid_line(rng, index)
    late["objects"][0]["prompts"][0]["frame"] = 10**40
    return ("\ufeff" + json.dumps(late)).encode(), False  # a BOM inside the file, a huge frame


def assert_each_entry_once(jobs, rejects, expected: set[str], valid: set[str]) -> None:
    job_locations = [job.location for job in jobs]
    reject_locations = {reject.location for reject in rejects}
    assert len(job_locations) == len(set(job_locations)), "a line became two jobs"
    assert not set(job_locations) & reject_locations, "a line is both labeled and rejected"
    assert set(job_locations) | reject_locations == expected
    assert len(job_locations) + len(reject_locations) == len(expected)
    assert valid <= set(job_locations), sorted(valid - set(job_locations))[:5]
    for reject in rejects:
        assert reject.field and reject.reason and isinstance(reject.raw, str)


def test_generated_bad_jsonl_lines_are_each_labeled_or_rejected_and_nothing_escapes(tmp_path):
    rng = random.Random(SEED)
    data: list[bytes] = []
    expected: set[str] = set()
    valid: set[str] = set()
    for index in range(LINES):
        if rng.random() < 0.1:
            data.append(rng.choice([b"", b"   ", b"\t\r"]))
            continue
        line, is_valid = jsonl_line(rng, index)
        data.append(line)
        number = len(data)
        if line.decode("utf-8", "replace").removeprefix("\ufeff" if number == 1 else "").strip():
            expected.add(f"m.jsonl line {number}")
            if is_valid:
                valid.add(f"m.jsonl line {number}")
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\n".join(data) + b"\n")
    jobs, rejects = read_manifest(str(path))
    assert len(expected) > 300 and len(valid) > 20 and len(rejects) > 200
    assert_each_entry_once(jobs, rejects, expected, valid)


def test_generated_bad_json_array_items_are_each_labeled_or_rejected(tmp_path):
    rng = random.Random(SEED + 1)
    items, valid = [], set()
    for index in range(LINES):
        if rng.random() < 0.2:
            items.append(valid_line(rng, index))
            valid.add(f"m.json item {len(items)}")
        elif rng.random() < 0.5:
            items.append(mutate(rng, valid_line(rng, index)))
        else:
            items.append(random_value(rng))
    Path(tmp_path / "m.json").write_text(json.dumps(items, indent=1))
    jobs, rejects = read_manifest(str(tmp_path / "m.json"))
    expected = {f"m.json item {number}" for number in range(1, len(items) + 1)}
    assert_each_entry_once(jobs, rejects, expected, valid)


def csv_cell(rng: random.Random, column: str, index: int) -> str:
    kind = rng.randrange(8)
    if kind == 0:
        return ""
    if kind == 1:
        return random_text(rng, surrogates=False)
    if kind == 2:
        return json.dumps(random_value(rng))  # lone surrogates appear only as \\ud800 escapes
    if kind == 3:
        return deep_text(rng)[:120_000]
    if kind == 4:
        return "[" + "1," * 70_000 + "1]"  # past csv's field size limit
    if kind == 5:
        return rng.choice(["NaN", "[NaN, 1]", "[Infinity, 0, 1, 2]", "9" * 5000, "-3", "1e39"])
    if kind == 6:
        return json.dumps(random_scalar(rng))
    return json.dumps([1, 2, 3, 4])[: rng.randrange(1, 12)]


def valid_row(rng: random.Random, index: int) -> list[str]:
    """A valid one-prompt row, cells in TABLE_COLUMNS order (video_id blank: the default)."""
    prompt = valid_prompt(rng, rng.randrange(3))
    prompt["mask_rle"] = prompt.pop("mask", None)
    row = {"video": f"/v/{index}.mp4", "object_id": "1", "frame": str(prompt.pop("frame"))}
    row.update({column: json.dumps(value) for column, value in prompt.items() if value is not None})
    return [row.get(column, "") for column in TABLE_COLUMNS]


def test_generated_bad_csv_rows_are_each_labeled_or_rejected_and_nothing_escapes(tmp_path):
    rng = random.Random(SEED + 2)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(TABLE_COLUMNS)
    expected, valid = set(), set()
    number = 0
    for index in range(LINES):
        if rng.random() < 0.25:
            cells, is_valid = valid_row(rng, index), True
        else:
            cells, is_valid = valid_row(rng, index), False
            for _ in range(rng.randrange(1, 4)):
                column = rng.randrange(len(TABLE_COLUMNS))
                cells[column] = csv_cell(rng, TABLE_COLUMNS[column], index)
            if cells[0].strip():
                cells[0] = f"{cells[0]}#{index}"  # one video per row: rows are judged alone
            if rng.random() < 0.05:
                cells = cells[: rng.randrange(len(cells))] or [""]
            elif rng.random() < 0.05:
                cells = cells + ["x"]
        writer.writerow(cells)
        if rng.random() < 0.05:
            writer.writerow([])
        if any(cell.strip() for cell in cells):
            number += 1
            expected.add(f"p.csv row {number}")
            if is_valid:
                valid.add(f"p.csv row {number}")
    (tmp_path / "p.csv").write_bytes(buffer.getvalue().encode("utf-8"))
    jobs, rejects = read_manifest(str(tmp_path / "p.csv"))
    assert len(expected) > 300 and len(valid) > 50 and len(rejects) > 200
    assert_each_entry_once(jobs, rejects, expected, valid)


@pytest.mark.parametrize("seed", range(3))
def test_generated_lines_never_raise_alone(tmp_path, seed):
    """Each generated line alone in a manifest: a job or a reject, never an exception."""
    rng = random.Random(SEED + 10 + seed)
    for index in range(60):
        line, _ = jsonl_line(rng, index)
        if not line.decode("utf-8", "replace").removeprefix("\ufeff").strip():
            continue
        path = tmp_path / f"m{index}.jsonl"
        path.write_bytes(line)
        jobs, rejects = read_manifest(str(path))
        assert len(jobs) + len({r.location for r in rejects}) == 1
