"""SA-V style JSON: per video ``<video_id>_manual.json`` as Meta's SA-V dataset ships it.

``masklet`` is a list over frames, each a list over objects (in ``masklet_id``
order) of COCO RLE ``{"size": [h, w], "counts": ...}``; an object with no
visible mask on a frame gets an all-zero RLE, as in SA-V. SA-V annotates every
4th frame of 24 fps video; here every frame 0..last is annotated (a loader
such as sam2's training ``JSONRawDataset`` then takes ``ann_every=1``). Reading,
both are understood: entry k of ``masklet`` is video frame k x s, where s is the
whole step that spreads the entries over ``video_frame_count`` (1 for this
export, 4 for SA-V's files; :func:`annotation_step`).
``masklet_id`` holds our object ids. The file name is SA-V's ``_manual``
suffix because that is what SA-V loaders look for; ``masklet_type`` says the
masks are automatic.
"""

from __future__ import annotations

import json
import posixpath

import numpy as np

from pipeline.exports.coco import segmentation_mask
from pipeline.exports.destination import Destination, safe_name
from pipeline.exports.options import ExportOptions
from pipeline.exports.reader import RunReader, VideoRows, visible
from pipeline.exports.reviewed import ReviewedExport, parse_object_id
from pipeline.masks import encode_mask
from pipeline.storage import url_to_fs

SAV_SUFFIX = "_manual.json"


def sav_file(video_id: str) -> str:
    return f"{safe_name(video_id)}{SAV_SUFFIX}"


def sav_record(video: VideoRows) -> dict:
    """The SA-V JSON object of one video."""
    length = video.frame_count
    empty = {
        "size": [video.height, video.width],
        "counts": encode_mask(np.zeros((video.height, video.width), bool))[0],
    }
    object_ids = video.object_ids()
    masklet = [[empty] * len(object_ids) for _ in range(length)]
    first_seen: list[int | None] = [None] * len(object_ids)
    frames_seen = [0] * len(object_ids)
    for column, (_, track) in enumerate(video.by_object()):
        for row in track.select(["frame_index", "rle", "area", "present"]).to_pylist():
            if visible(row["present"], row["area"]):
                i = row["frame_index"]
                masklet[i][column] = {"size": [video.height, video.width], "counts": row["rle"]}
                frames_seen[column] += 1
                if first_seen[column] is None:
                    first_seen[column] = i
    return {
        "video_id": video.video_id,
        "video_height": video.height,
        "video_width": video.width,
        "video_frame_count": length,
        "masklet": masklet,
        "masklet_id": object_ids,
        "masklet_num": len(object_ids),
        "masklet_first_appeared_frame": first_seen,
        "masklet_frame_count": frames_seen,
        "masklet_type": ["auto"] * len(object_ids),
    }


def export_sav(reader: RunReader, dest: Destination, options: ExportOptions) -> int:
    """One SA-V JSON per video; returns the number of files."""
    count = 0
    for video in reader.videos():
        dest.write_json(sav_file(video.video_id), sav_record(video))
        count += 1
    return count


def annotation_step(frame_count: object, entries: int, where: str) -> int:
    """Video frames per ``masklet`` entry: 1 when every frame is annotated (``export_sav``, or
    no ``video_frame_count`` given), else the whole step s with entries on frames 0, s, 2s, ...
    reaching the video's last s frames (SA-V: 24 fps video annotated at 6 fps, s = 4)."""
    if frame_count is None or entries == 0 or frame_count == entries:
        return 1
    if isinstance(frame_count, bool) or not isinstance(frame_count, int) or frame_count < entries:
        raise ValueError(
            f"{where}: video_frame_count must be a whole number of at least the {entries} "
            f"masklet entries, got {frame_count!r}"
        )
    step = max(round(frame_count / entries), 1)
    if not (entries - 1) * step < frame_count <= entries * step:
        raise ValueError(
            f"{where}: {entries} masklet entries do not spread evenly over video_frame_count "
            f"{frame_count} (SA-V's files annotate every 4th frame)"
        )
    return step


def read_sav_review(root: str, storage_options: dict | None = None) -> ReviewedExport:
    """Every ``*_manual.json`` under ``root``: entry k of ``masklet`` is frame k x s of the
    video (:func:`annotation_step`: s = 1 when every frame is annotated, as ``export_sav``
    writes; 4 for SA-V's own files); ``masklet_id`` holds object ids (one not in the run is a
    new object); an all-zero RLE is an absent object."""
    fs, base = url_to_fs(root, storage_options)
    if not fs.isdir(base):
        raise FileNotFoundError(f"{root}: no such folder")
    paths = sorted(p for p in fs.ls(base, detail=False) if p.endswith(SAV_SUFFIX))
    if not paths:
        raise FileNotFoundError(f"{root}: no SA-V files (*{SAV_SUFFIX})")
    export = ReviewedExport(root)
    for path in paths:
        with fs.open(path, "rb") as handle:
            try:
                data = json.loads(handle.read())
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}: not valid JSON ({error})") from None
        video_id = str(data.get("video_id") or posixpath.basename(path)[: -len(SAV_SUFFIX)])
        masklet = data.get("masklet")
        ids = data.get("masklet_id")
        if not isinstance(masklet, list) or not isinstance(ids, list):
            raise ValueError(f"{path}: needs the lists masklet (frames x objects) and masklet_id")
        height, width = data.get("video_height"), data.get("video_width")
        object_ids = [parse_object_id(v, f"{path} masklet_id[{i}]") for i, v in enumerate(ids)]
        step = annotation_step(data.get("video_frame_count"), len(masklet), path)
        if step > 1:
            export.frame_steps[video_id] = step
        for entry, objects in enumerate(masklet):
            where = f"{path} masklet[{entry}]"
            frame = entry * step
            export.add_frame(video_id, frame, where)
            if not isinstance(objects, list) or len(objects) != len(ids):
                raise ValueError(f"{where}: expected {len(ids)} masks, one per masklet_id")
            for column, (object_id, rle) in enumerate(zip(object_ids, objects)):
                at = f"{where}[{column}]"
                mask = segmentation_mask(rle, height, width, at)
                export.add_mask(video_id, frame, object_id, f"masklet {ids[column]}", mask, at)
    return export
