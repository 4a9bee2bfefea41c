"""SA-V style JSON: per video ``<video_id>_manual.json`` as Meta's SA-V dataset ships it.

``masklet`` is a list over frames, each a list over objects (in ``masklet_id``
order) of COCO RLE ``{"size": [h, w], "counts": ...}``; an object with no
visible mask on a frame gets an all-zero RLE, as in SA-V. SA-V annotates every
4th frame of 24 fps video; here every frame 0..last is annotated (a loader
such as sam2's training ``JSONRawDataset`` then takes ``ann_every=1``).
``masklet_id`` holds our object ids. The file name is SA-V's ``_manual``
suffix because that is what SA-V loaders look for; ``masklet_type`` says the
masks are automatic.
"""

from __future__ import annotations

import numpy as np

from pipeline.exports.destination import Destination, safe_name
from pipeline.exports.options import ExportOptions
from pipeline.exports.reader import RunReader, VideoRows, visible
from pipeline.masks import encode_mask


def sav_file(video_id: str) -> str:
    return f"{safe_name(video_id)}_manual.json"


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
