"""Helpers shared by the pipeline test modules: short real clips cut with PyAV, manifests
with point, box and mask prompts, run configs on the mini_a model, the single-process
reference table and a row-for-row comparison of mask tables."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa

from pipeline.coordinator import RunConfig
from pipeline.masks import encode_mask
from pipeline.retry import RetryPolicy
from pipeline.sink import read_masks

CLIP_SIZE = (128, 96)  # width, height
RUN_ID = "test-run"


def make_clip(source: Path, target: Path, frames: int = 24, start: int = 0, size=CLIP_SIZE) -> Path:
    """Re-encode `frames` frames of a real video (from `start`) to a small H.264 MP4."""
    width, height = size
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = dst.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "12"}
        written = 0
        for index, frame in enumerate(src.decode(video=0)):
            if index < start:
                continue
            small = frame.reformat(width=width, height=height, format="yuv420p")
            small.pts = None
            for packet in stream.encode(small):
                dst.mux(packet)
            written += 1
            if written == frames:
                break
        for packet in stream.encode():
            dst.mux(packet)
    return target


def ellipse_rle(height: int, width: int, cx: float, cy: float, rx: float, ry: float) -> dict:
    yy, xx = np.mgrid[0:height, 0:width]
    mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    return {"size": [height, width], "counts": encode_mask(mask)[0]}


def demo_entries(clips: dict[str, str]) -> list[dict]:
    """Manifest entries over clips named dog/coffee/bedroom: points, a box, a mask, a correction."""
    w, h = CLIP_SIZE
    return [
        {
            "video": clips["dog"],
            "video_id": "dog",
            "objects": [
                {
                    "object_id": 1,
                    "prompts": [
                        {"frame": 0, "points": [[64, 50]], "labels": [1]},
                        # a correction on a later frame: the first click plus a negative one
                        {"frame": 10, "points": [[64, 50], [20, 20]], "labels": [1, 0]},
                    ],
                },
                {"object_id": 2, "prompts": [{"frame": 5, "box": [10, 10, 60, 70]}]},
            ],
        },
        {
            "video": clips["coffee"],
            "video_id": "coffee",
            "objects": [
                {"object_id": 1, "prompts": [{"frame": 0, "box": [40, 20, 110, 90]}]},
                {
                    "object_id": 7,
                    "prompts": [{"frame": 12, "mask": ellipse_rle(h, w, 60, 45, 25, 18)}],
                },
            ],
        },
        {
            "video": clips["bedroom"],
            "video_id": "bedroom",
            "objects": [
                {"object_id": 3, "prompts": [{"frame": 20, "points": [[30, 60]], "labels": [1]}]}
            ],
        },
    ]


def write_jsonl(path: Path, entries: list) -> Path:
    path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in entries))
    return path


def make_clips(videos_dir: Path, folder: Path, frames: int = 24) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    return {
        name: str(make_clip(videos_dir / source, folder / f"{name}.mp4", frames=frames))
        for name, source in (
            ("dog", "01_dog.mp4"),
            ("coffee", "04_coffee.mp4"),
            ("bedroom", "bedroom.mp4"),
        )
    }


def mini_files(mini_a_dir: Path) -> tuple[str, str]:
    """The mini model's config and checkpoint paths (the `mini` fixture is the model built)."""
    return str(mini_a_dir / "config.json"), str(mini_a_dir / "checkpoint.pt")


def run_config(manifest, output, mini_a_dir: Path, **overrides) -> RunConfig:
    model, checkpoint = mini_files(mini_a_dir)
    settings = dict(
        manifest=str(manifest),
        output=str(output),
        model=model,
        checkpoint=checkpoint,
        workers=2,
        torch_threads=1,
        run_id=RUN_ID,
        progress=False,
        retry=RetryPolicy(max_attempts=3, backoff_s=0.1),
    )
    settings.update(overrides)
    return RunConfig(**settings)


def reference_table(mini_a_dir: Path, manifest, storage_options=None) -> pa.Table:
    """The single-process result for `manifest`, at one torch thread like the workers."""
    import torch

    from pipeline.coordinator import describe_model
    from pipeline.labeling import label_jobs
    from pipeline.manifest import read_manifest
    from sam2_core import build_model
    from sam2_core.hub import sha256_file

    model_arg, checkpoint = mini_files(mini_a_dir)
    jobs, _ = read_manifest(str(manifest), storage_options=storage_options)
    label, _ = describe_model(model_arg)
    name = f"{label}@{sha256_file(checkpoint)[:12]}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model(model_arg, checkpoint=checkpoint)
        return label_jobs(
            model, jobs, run_id=RUN_ID, model_name=name, storage_options=storage_options
        )
    finally:
        torch.set_num_threads(threads)


def sorted_masks(output, storage_options=None) -> pa.Table:
    table = read_masks(str(output), storage_options=storage_options)
    return table.sort_by(
        [("video_id", "ascending"), ("object_id", "ascending"), ("frame_index", "ascending")]
    )


def assert_same_rows(actual: pa.Table, expected: pa.Table) -> None:
    """Row-for-row equality, with a readable first difference."""
    assert actual.schema.names == expected.schema.names
    assert actual.num_rows == expected.num_rows, (actual.num_rows, expected.num_rows)
    keys = list(
        zip(*(actual.column(c).to_pylist() for c in ("video_id", "object_id", "frame_index")))
    )
    assert len(set(keys)) == len(keys), "duplicated (video, object, frame) rows"
    for name in expected.schema.names:
        a, e = actual.column(name).to_pylist(), expected.column(name).to_pylist()
        if a != e:
            i = next(i for i, (x, y) in enumerate(zip(a, e)) if x != y)
            raise AssertionError(
                f"column {name} differs first at row {i} {keys[i]}: {a[i]!r} != {e[i]!r}"
            )
