"""Label Studio image tasks with brush (RLE) pre-annotations, one task per video frame.

Label Studio's brush tool works on images, not on its video player, so each
(video, frame) becomes an image task whose ``data.image`` is the frame's URL
(``ExportOptions.frame_name``; frames are not part of a run's output) and
whose ``predictions`` hold one ``brushlabels`` result per visible object,
``id`` = ``object-<object_id>``, ``score`` = predicted IoU, its brush label the object's
``category`` (``object`` without one). Tasks go to one JSON list per video
(``tasks/<video_id>.json``, importable as is); the labeling config to create the project
with is ``label_config.xml`` (a label per class of the run).

The brush RLE is Label Studio's bit-packed format (the one its converter's
``decode_rle`` reads): a 32-bit value count, 5-bit word size, four 4-bit run
size classes, then runs over the RGBA bytes of the image. It is encoded here
with numpy because the converter's encoder builds a Python bit string run by
run, and label-studio-sdk, its home, pins numpy and OpenCV below the versions
this project runs (see pyproject's ``export`` extra).
"""

from __future__ import annotations

import json
import posixpath
from xml.sax.saxutils import quoteattr

import numpy as np

from pipeline.exports.destination import Destination, JsonArrayStream, safe_name
from pipeline.exports.options import ExportOptions, class_name, class_names
from pipeline.exports.reader import RunReader, visible
from pipeline.exports.reviewed import ReviewedExport, parse_object_id
from pipeline.masks import decode_mask
from pipeline.storage import url_to_fs

FROM_NAME = "label"
TO_NAME = "image"
CONFIG_FILE = "label_config.xml"


def label_config(names: list[str]) -> str:
    """The labeling config: a brush label per class name."""
    labels = "".join(f"    <Label value={quoteattr(name)}/>\n" for name in names)
    return f"""<View>
  <Image name="{TO_NAME}" value="$image" zoom="true"/>
  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">
{labels}  </BrushLabels>
</View>
"""


_RUN_CLASSES = ((3, 8), (4, 16), (8, 256), (16, 65536))  # (bits, longest run) per size class
_WORD_BITS = 8


def brush_rle(mask: np.ndarray) -> list[int]:
    """Label Studio brush RLE (a list of bytes) of an H x W bool mask: every pixel
    becomes 4 RGBA bytes, 255 inside the mask and 0 outside.

    Built with array operations: each run of equal bytes (split at 65,536, the longest run a
    size class holds) is one record of four fields -- series flag, size class, length - 1,
    value -- and every field of every record becomes its bits at once."""
    flat = np.asarray(mask, dtype=bool).ravel()
    total = 4 * flat.size
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], changes))
    lengths = 4 * np.diff(np.concatenate((starts, [flat.size])))
    words = np.where(flat[starts], 255, 0)
    longest = _RUN_CLASSES[-1][1]
    pieces = -(-lengths // longest)  # runs longer than a size class holds go in pieces
    piece = np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    lengths = np.minimum(np.repeat(lengths, pieces) - longest * piece, longest)
    words = np.repeat(words, pieces)
    size_class = np.searchsorted([top for _, top in _RUN_CLASSES], lengths)
    class_bits = np.array([bits for bits, _ in _RUN_CLASSES])[size_class]
    series = (lengths > 1).astype(np.int64)  # a single byte is written as a one-value run
    fields = np.stack([series, size_class, lengths - 1, words], axis=1).ravel()
    widths = np.stack(
        [
            np.ones_like(series),
            np.full_like(series, 2),
            class_bits,
            np.full_like(series, _WORD_BITS),
        ],
        axis=1,
    ).ravel()
    header = [total, _WORD_BITS - 1] + [bits - 1 for bits, _ in _RUN_CLASSES]
    fields = np.concatenate((header, fields)).astype(np.int64)
    widths = np.concatenate(([32, 5, 4, 4, 4, 4], widths)).astype(np.int64)
    ends = np.cumsum(widths)
    shift = np.repeat(ends, widths) - 1 - np.arange(int(ends[-1]))
    bits = (np.repeat(fields, widths) >> shift) & 1
    return np.packbits(bits.astype(np.uint8)).tolist()


def export_label_studio(reader: RunReader, dest: Destination, options: ExportOptions) -> int:
    """Tasks per video plus the labeling config; returns the number of brush results."""
    dest.write_bytes(CONFIG_FILE, label_config(class_names(reader.categories())).encode("utf-8"))
    count = 0
    for video in reader.videos():
        with dest.open_text(f"tasks/{safe_name(video.video_id)}.json") as out:
            tasks = JsonArrayStream(out, None)
            for frame_index, frame in video.by_frame():
                results, scores, models = [], [], set()
                for row in frame.to_pylist():
                    models.add(row["model"])
                    if not visible(row["present"], row["area"]):
                        continue
                    mask = decode_mask(row["rle"], video.height, video.width)
                    results.append(
                        {
                            "id": f"object-{row['object_id']}",
                            "type": "brushlabels",
                            "from_name": FROM_NAME,
                            "to_name": TO_NAME,
                            "original_width": video.width,
                            "original_height": video.height,
                            "image_rotation": 0,
                            "value": {
                                "format": "rle",
                                "rle": brush_rle(mask),
                                "brushlabels": [class_name(row["category"])],
                            },
                            "score": row["score"],
                        }
                    )
                    if row["score"] is not None:
                        scores.append(row["score"])
                count += len(results)
                tasks.append(
                    {
                        "data": {
                            TO_NAME: options.frame_file(video.video_id, frame_index),
                            "video_id": video.video_id,
                            "frame_index": frame_index,
                        },
                        "predictions": [
                            {
                                "model_version": ",".join(sorted(m for m in models if m))
                                or "sam2-labeler",
                                "score": float(np.mean(scores)) if scores else None,
                                "result": results,
                            }
                        ],
                    }
                )
            tasks.close()
    return count


# ------------------------------------------------------------------ reader


def decode_brush_rle(rle: list[int]) -> np.ndarray:
    """The values (a flat uint8 array) of a Label Studio brush RLE: the inverse of
    :func:`brush_rle`, following the format its converter's ``decode_rle`` reads."""
    bits = "".join(f"{b:08b}" for b in bytes(rle))
    position = 0

    def read(count: int) -> int:
        nonlocal position
        if position + count > len(bits):
            raise ValueError("brush RLE ends early")
        value = int(bits[position : position + count], 2)
        position += count
        return value

    total = read(32)
    word = read(5) + 1
    classes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(total, np.uint8)
    i = 0
    while i < total:
        repeated = read(1)
        end = i + 1 + read(classes[read(2)])
        if end > total:
            raise ValueError(f"brush RLE run ends at value {end}, past its {total} values")
        if repeated:
            out[i:end] = read(word)
            i = end
        else:
            while i < end:
                out[i] = read(word)
                i += 1
    return out


def _task_files(root: str, storage_options: dict | None) -> tuple[object, list[str]]:
    fs, base = url_to_fs(root, storage_options)
    folder = posixpath.join(base, "tasks")
    if not fs.isdir(folder):
        folder = base
    if not fs.isdir(folder):
        raise FileNotFoundError(f"{root}: no such folder")
    paths = sorted(p for p in fs.ls(folder, detail=False) if p.endswith(".json"))
    if not paths:
        raise FileNotFoundError(f"{root}: no Label Studio task files (tasks/*.json)")
    return fs, paths


def _reviewed_result(task: dict) -> list:
    """A task's results as the reviewer left them: its last annotation that was not
    cancelled, else (not reviewed) its first prediction."""
    annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if annotations:
        return annotations[-1].get("result") or []
    predictions = task.get("predictions") or []
    return (predictions[0].get("result") or []) if predictions else []


def read_label_studio_review(root: str, storage_options: dict | None = None) -> ReviewedExport:
    """Task lists (``tasks/*.json`` as exported, or Label Studio's own JSON export put in
    the folder): each task's ``data`` names its video_id and frame_index; a brush region
    ``object-<id>`` is our object, any other region id an object drawn in Label Studio
    (each such region is its own new object: image tasks do not link frames)."""
    fs, paths = _task_files(root, storage_options)
    export = ReviewedExport(root)
    for path in paths:
        with fs.open(path, "rb") as handle:
            try:
                tasks = json.loads(handle.read())
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(tasks, list):
            raise ValueError(f"{path}: expected a JSON list of tasks")
        for t, task in enumerate(tasks):
            where = f"{path} task {t}"
            data = task.get("data") if isinstance(task, dict) else None
            if not isinstance(data, dict) or "video_id" not in data or "frame_index" not in data:
                raise ValueError(
                    f"{where}: data needs video_id and frame_index (as `jobs export --format "
                    "label-studio` writes them)"
                )
            video_id, frame = str(data["video_id"]), data["frame_index"]
            if isinstance(frame, bool) or not isinstance(frame, int):
                raise ValueError(f"{where}: frame_index must be a whole number, got {frame!r}")
            export.add_frame(video_id, frame, where)
            for r, result in enumerate(_reviewed_result(task)):
                _read_result(result, f"{where} result {r}", video_id, frame, export)
    return export


def _read_result(result: dict, where: str, video_id: str, frame: int, export) -> None:
    kind = result.get("type", "")
    if not kind.endswith("labels"):
        return  # choices, text areas ...: no region
    value = result.get("value") or {}
    if kind != "brushlabels" or value.get("format") != "rle":
        raise ValueError(f"{where}: a {kind} region; only brush (RLE) regions are read")
    height, width = result.get("original_height"), result.get("original_width")
    try:
        pixels = decode_brush_rle(value["rle"])
        mask = pixels.reshape(height, width, 4)[:, :, 3] > 0
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{where}: unreadable brush RLE ({error})") from None
    region = str(result.get("id", ""))
    object_id = None
    if region.startswith("object-"):
        object_id = parse_object_id(region.removeprefix("object-"), where)
    export.add_mask(video_id, frame, object_id, f"region {region}", mask, where)
