"""Write synthetic videos as a labeling dataset: MP4 files, ground-truth mask tables, a manifest.

Layout under ``output_uri`` (a local folder or any fsspec URL)::

    videos/<video_id>.mp4             H.264 (libx264, yuv420p), frames as generated
    ground_truth/<video_id>.parquet   one row per object and frame, in MASK_SCHEMA
    manifest.jsonl                    one line per video, one positive click per object

The ground truth is the generator's masks; the MP4 keeps the frame count and
size, so the masks line up with the decoded frames (only the pixel values
change slightly through lossy coding, hence the high-quality ``crf``).
Each object's click sits on the first frame where it is clearly visible
(:func:`sam2_core.synthetic.prompt_frame`), at its interior-most pixel.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.labeling import to_object_prompts
from pipeline.manifest import ObjectSpec, Prompt
from pipeline.masks import mask_row, mask_table
from pipeline.storage import has_protocol, is_local, join, url_to_fs
from sam2_core.frames import FrameSource
from sam2_core.synthetic import (
    SyntheticConfig,
    SyntheticVideo,
    first_click,
    generate_video,
    prompt_frame,
)

GROUND_TRUTH_RUN_ID = "ground-truth"
GROUND_TRUTH_MODEL = "synthetic"


@dataclass(frozen=True)
class SyntheticDataset:
    """Where a written dataset lives (URIs as a reader would pass them)."""

    manifest: str
    ground_truth: str  # folder of per-video Parquet tables
    videos: tuple[str, ...]
    video_ids: tuple[str, ...]


def video_id_for_seed(seed: int, prefix: str = "synthetic") -> str:
    """The id of the video generated from ``seed``."""
    return f"{prefix}-{int(seed):06d}"


def encode_mp4(frames: np.ndarray, fps: int = 24, crf: int = 14, preset: str = "medium") -> bytes:
    """Encode T x H x W x 3 uint8 RGB frames as an H.264 MP4 (yuv420p, constant quality ``crf``)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(
            f"frames must be a non-empty T x H x W x 3 uint8 array, got {frames.shape} {frames.dtype}"
        )
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 in yuv420p needs an even frame size, got {height}x{width}")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height = int(width), int(height)
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(int(crf)), "preset": preset}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def ground_truth_table(video_id: str, video: SyntheticVideo) -> pa.Table:
    """The generator's visible masks as mask-table rows (object-major, then frame order)."""
    return mask_table(
        mask_row(
            video_id,
            object_id,
            t,
            track[t],
            score=1.0,
            present=bool(track[t].any()),
            prompted=False,
            run_id=GROUND_TRUTH_RUN_ID,
            model=GROUND_TRUTH_MODEL,
        )
        for object_id, track in zip(video.object_ids, video.masks)
        for t in range(len(track))
    )


def manifest_entry(
    video_uri: str, video_id: str, video: SyntheticVideo, min_prompt_fraction: float = 0.25
) -> dict:
    """One manifest line: a positive click per object where it first shows clearly."""
    objects = []
    for row, object_id in enumerate(video.object_ids):
        frame = prompt_frame(video.masks[row], min_prompt_fraction)
        x, y = first_click(video.masks[row, frame])
        objects.append(
            {
                "object_id": int(object_id),
                "prompts": [{"frame": frame, "points": [[x, y]], "labels": [1]}],
            }
        )
    return {"video": video_uri, "video_id": video_id, "objects": objects}


def entry_prompts(entry: dict, frames: FrameSource) -> list:
    """The tracker prompts of a :func:`manifest_entry` line, converted as a label run converts
    manifest prompts (so in-process evaluation tracks from exactly what ``jobs label`` would)."""
    objects = [
        ObjectSpec(
            object_id=int(obj["object_id"]),
            prompts=tuple(
                Prompt(
                    frame=int(p["frame"]),
                    points=tuple(map(tuple, p["points"])),
                    labels=tuple(p["labels"]),
                )
                for p in obj["prompts"]
            ),
        )
        for obj in entry["objects"]
    ]
    return to_object_prompts(objects, frames)


def write_synthetic_dataset(
    output_uri: str,
    seeds: Iterable[int],
    config: SyntheticConfig | None = None,
    storage_options: dict | None = None,
    *,
    fps: int = 24,
    crf: int = 14,
    min_prompt_fraction: float = 0.25,
    id_prefix: str = "synthetic",
) -> SyntheticDataset:
    """Generate one video per seed and write videos, ground truth and manifest under ``output_uri``.

    Existing files of the same names are overwritten, so a rerun with the
    same seeds and config reproduces the dataset.
    """
    config = config or SyntheticConfig()
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("write_synthetic_dataset needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    fs, root = url_to_fs(output_uri, storage_options)
    base_uri = output_uri.rstrip("/") if has_protocol(output_uri) else root
    if is_local(fs):
        fs.makedirs(join(root, "videos"), exist_ok=True)
        fs.makedirs(join(root, "ground_truth"), exist_ok=True)

    lines, videos, ids = [], [], []
    for seed in seeds:
        video = generate_video(seed, config)
        video_id = video_id_for_seed(seed, id_prefix)
        video_uri = f"{base_uri}/videos/{video_id}.mp4"
        with fs.open(join(root, "videos", f"{video_id}.mp4"), "wb") as handle:
            handle.write(encode_mp4(video.frames, fps=fps, crf=crf))
        with fs.open(join(root, "ground_truth", f"{video_id}.parquet"), "wb") as handle:
            pq.write_table(ground_truth_table(video_id, video), handle)
        lines.append(json.dumps(manifest_entry(video_uri, video_id, video, min_prompt_fraction)))
        videos.append(video_uri)
        ids.append(video_id)
    with fs.open(join(root, "manifest.jsonl"), "wb") as handle:
        handle.write(("\n".join(lines) + "\n").encode("utf-8"))
    return SyntheticDataset(
        manifest=f"{base_uri}/manifest.jsonl",
        ground_truth=f"{base_uri}/ground_truth",
        videos=tuple(videos),
        video_ids=tuple(ids),
    )
