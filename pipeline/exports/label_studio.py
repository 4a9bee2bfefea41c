"""Label Studio image tasks with brush (RLE) pre-annotations, one task per video frame.

Label Studio's brush tool works on images, not on its video player, so each
(video, frame) becomes an image task whose ``data.image`` is the frame's URL
(``ExportOptions.frame_name``; frames are not part of a run's output) and
whose ``predictions`` hold one ``brushlabels`` result per visible object,
``id`` = ``object-<object_id>``, ``score`` = predicted IoU. Tasks go to one
JSON list per video (``tasks/<video_id>.json``, importable as is); the
labeling config to create the project with is ``label_config.xml``.

The brush RLE is Label Studio's bit-packed format (the one its converter's
``decode_rle`` reads): a 32-bit value count, 5-bit word size, four 4-bit run
size classes, then runs over the RGBA bytes of the image. It is encoded here
with numpy because the converter's encoder builds a Python bit string run by
run, and label-studio-sdk, its home, pins numpy and OpenCV below the versions
this project runs (see pyproject's ``export`` extra).
"""

from __future__ import annotations

import numpy as np

from pipeline.exports.destination import Destination, JsonArrayStream, safe_name
from pipeline.exports.options import CATEGORY_NAME, ExportOptions
from pipeline.exports.reader import RunReader, visible
from pipeline.masks import decode_mask

FROM_NAME = "label"
TO_NAME = "image"
CONFIG_FILE = "label_config.xml"
LABEL_CONFIG = f"""<View>
  <Image name="{TO_NAME}" value="$image" zoom="true"/>
  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">
    <Label value="{CATEGORY_NAME}"/>
  </BrushLabels>
</View>
"""
_RUN_CLASSES = ((3, 8), (4, 16), (8, 256), (16, 65536))  # (bits, longest run) per size class


def brush_rle(mask: np.ndarray) -> list[int]:
    """Label Studio brush RLE (a list of bytes) of an H x W bool mask: every pixel
    becomes 4 RGBA bytes, 255 inside the mask and 0 outside."""
    values = np.repeat(np.where(mask.ravel(), 255, 0).astype(np.uint8), 4)
    changes = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate(([0], changes))
    lengths = np.diff(np.concatenate((starts, [values.size])))
    parts = [
        f"{values.size:032b}",
        f"{8 - 1:05b}",
        "".join(f"{b - 1:04b}" for b, _ in _RUN_CLASSES),
    ]
    for start, length in zip(starts.tolist(), lengths.tolist()):
        word = f"{values[start]:08b}"
        while length > 0:
            chunk = min(length, 65536)
            if chunk == 1:
                parts.append("0" + "00" + "000" + word)  # a single value, not a series
            else:
                size_class = next(i for i, (_, top) in enumerate(_RUN_CLASSES) if chunk <= top)
                bits = _RUN_CLASSES[size_class][0]
                parts.append(f"1{size_class:02b}{chunk - 1:0{bits}b}{word}")
            length -= chunk
    bitstring = "".join(parts)
    bitstring += "0" * (-len(bitstring) % 8)
    bits = np.frombuffer(bitstring.encode("ascii"), np.uint8) - ord("0")
    return np.packbits(bits).tolist()


def export_label_studio(reader: RunReader, dest: Destination, options: ExportOptions) -> int:
    """Tasks per video plus the labeling config; returns the number of brush results."""
    dest.write_bytes(CONFIG_FILE, LABEL_CONFIG.encode("utf-8"))
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
                                "brushlabels": [CATEGORY_NAME],
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
