"""Peak memory of ``python -m jobs export`` on a large run (not a timed test).

Builds a run of ``--videos`` x ``--objects`` x ``--frames`` rows (default
40 x 5 x 1000 = 200,000) by committing synthetic mask tables unit by unit
(one unit per video, moving ellipses at ``--size``), then exports it in each
format in a fresh process and reads that process's peak RSS (VmHWM). Two
reference processes frame the figures: one that only imports the exporters
and opens the run (``baseline``), and one that loads the whole table with
``read_masks`` (what a non-streaming export would start from).

    PYTHONPATH=. python -m benchmarks.bench_export --json benchmarks/results/export_200k.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks.common import environment, frame_size, positive_int, print_table, report, write_json
from pipeline.masks import MASK_SCHEMA, encode_mask
from pipeline.sink import OutputStore

SHAPES_PER_OBJECT = 50  # distinct masks per object, cycled over frames (encoding is not measured)

_CHILD = r"""
import json, sys, time
from benchmarks.common import read_peak_rss
mode, run, fmt, dest = sys.argv[1:5]
from pipeline.exports import RunReader, export_run
start = time.perf_counter()
rows = None
if mode == "baseline":
    RunReader(run).video_ids()
elif mode == "full-table":
    from pipeline.sink import read_masks
    rows = read_masks(run).num_rows
else:
    export_run(run, fmt, dest)
print(json.dumps({"seconds": time.perf_counter() - start, "rows": rows, **read_peak_rss()}))
"""


def build_run(output: str, videos: int, objects: int, frames: int, size: tuple[int, int]) -> int:
    """Commit ``videos`` units of objects x frames rows; returns the number of rows."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    store = OutputStore(output)
    total = 0
    for v in range(videos):
        shapes = {}
        for o in range(objects):
            for s in range(SHAPES_PER_OBJECT):
                cx = width * (0.1 + 0.8 * s / SHAPES_PER_OBJECT)
                cy = height * (o + 0.5) / objects
                mask = ((xx - cx) / (width * 0.08)) ** 2 + (
                    (yy - cy) / (height * 0.4 / objects)
                ) ** 2 <= 1
                shapes[(o, s)] = encode_mask(mask)
        keys = [(o, f) for o in range(objects) for f in range(frames)]
        encoded = [shapes[(o, f % SHAPES_PER_OBJECT)] for o, f in keys]
        table = pa.table(
            {
                "video_id": [f"video-{v:03d}"] * len(keys),
                "object_id": [o + 1 for o, _ in keys],
                "frame_index": [f for _, f in keys],
                "height": [height] * len(keys),
                "width": [width] * len(keys),
                "rle": [e[0] for e in encoded],
                "area": [e[1] for e in encoded],
                "bbox": [list(e[2]) for e in encoded],
                "score": [0.9] * len(keys),
                "present": [True] * len(keys),
                "prompted": [f == 0 for _, f in keys],
                "run_id": ["bench"] * len(keys),
                "model": ["synthetic"] * len(keys),
                "object_score_logit": [5.0] * len(keys),
                "source": ["prompt"] * len(keys),
                "category": [None] * len(keys),
                "detection_score": [None] * len(keys),
            },
            schema=MASK_SCHEMA,
        )
        store.commit_unit(f"video-{v:03d}-u0", table, {"benchmark": True})
        total += table.num_rows
    return total


def measure(mode: str, run: str, fmt: str, dest: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, run, fmt, dest],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    from pipeline.exports import FORMATS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=positive_int, default=40)
    parser.add_argument("--objects", type=positive_int, default=5)
    parser.add_argument("--frames", type=positive_int, default=1000)
    parser.add_argument("--size", type=frame_size, default=(320, 180), help="WxH")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    env = environment()
    figures = {}
    with tempfile.TemporaryDirectory() as folder:
        run = str(Path(folder) / "run")
        rows = build_run(run, args.videos, args.objects, args.frames, args.size)
        figures["baseline"] = measure("baseline", run, "", "")
        figures["full-table"] = measure("full-table", run, "", "")
        for fmt in args.formats.split(","):
            figures[fmt] = measure("export", run, fmt, str(Path(folder) / fmt))
    mib = 1 / 2**20
    base = figures["baseline"]["peak_rss_bytes"]
    print_table(
        ["process", "peak RSS MiB", "over baseline MiB", "seconds"],
        [
            [
                name,
                f"{f['peak_rss_bytes'] * mib:.0f}",
                f"{(f['peak_rss_bytes'] - base) * mib:.0f}",
                f"{f['seconds']:.1f}",
            ]
            for name, f in figures.items()
        ],
        title=f"export of {rows} rows ({args.videos} videos x {args.objects} objects x {args.frames} frames, {args.size[0]}x{args.size[1]})",
    )
    settings = {**vars(args), "rows": rows}
    payload = report("export", settings, figures, env)
    if args.json:
        write_json(args.json, payload)
    return payload


if __name__ == "__main__":
    main()
