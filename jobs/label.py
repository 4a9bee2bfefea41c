"""``python -m jobs label``: label the videos of a manifest into Parquet mask tables.

Exit status: 0 every unit succeeded; 2 some unit failed for good or some
manifest entry was rejected (the rest is still labeled; with --strict a
reject means nothing runs); 1 the run could not proceed; 130 interrupted
(Ctrl-C: the units committed so far stay, summary.json says how far it got).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from jobs.argtypes import json_object, non_negative_float, positive_float, positive_int
from pipeline.storage import (
    StorageUnreachableError,
    absolute_uri,
    check_reachable,
    credential_fields,
    has_protocol,
)

EXIT_INTERRUPTED = 130  # as a shell reports a process stopped by Ctrl-C (128 + SIGINT)

# (flag, argparse keyword arguments): the one declaration of each option. jobs.submit takes them
# all and rebuilds the label command line from this table; jobs.demo takes a few (add_option).
OPTIONS: list[tuple[str, dict]] = [
    (
        "--manifest",
        {
            "required": True,
            "help": "manifest URI (.jsonl, .parquet or .csv; local path or fsspec URL)",
        },
    ),
    (
        "--output",
        {"required": True, "help": "output URI: masks/, failures/, rejects/, summary.json go here"},
    ),
    (
        "--model",
        {
            "default": None,
            "help": "official model name (e.g. sam2.1_hiera_tiny), a path/URL to an official-style "
            "config, or 'demo' for the small model bundled in the package (synthetic scenes only); "
            "default: sam2.1_hiera_base_plus with its official checkpoint, fetched once (SHA-256 "
            "checked) into the cache",
        },
    ),
    (
        "--checkpoint",
        {
            "default": None,
            "help": "checkpoint path or URL (fetched once per node, sha256 checked)",
        },
    ),
    (
        "--checkpoint-cache",
        {
            "default": None,
            "help": "per-node folder for downloaded checkpoints (default ~/.cache/sam2-labeler)",
        },
    ),
    (
        "--workers",
        {"type": positive_int, "default": 1, "help": "number of worker actors (default 1)"},
    ),
    (
        "--gpus-per-worker",
        {"type": non_negative_float, "default": 0.0, "help": "GPUs per worker (0: CPU)"},
    ),
    (
        "--cpus-per-worker",
        {"type": non_negative_float, "default": 1.0, "help": "CPUs per worker (default 1)"},
    ),
    (
        "--ray-address",
        {"default": None, "help": "Ray cluster address (default: start Ray locally)"},
    ),
    (
        "--num-cpus",
        {
            "type": positive_int,
            "default": None,
            "help": "CPUs of a locally started Ray (default: all)",
        },
    ),
    (
        "--max-attempts",
        {
            "type": positive_int,
            "default": 3,
            "help": "attempts per unit on transient errors (default 3)",
        },
    ),
    (
        "--retry-backoff",
        {
            "type": non_negative_float,
            "default": 1.0,
            "help": "seconds before the first retry; doubles each time (default 1)",
        },
    ),
    (
        "--stall-timeout",
        {
            "type": positive_float,
            "default": 600.0,
            "help": "seconds a started unit may go without tracking a new frame before its worker "
            "is stopped and the unit retried (default 600; long videos are judged by progress)",
        },
    ),
    (
        "--unit-timeout",
        {
            "type": positive_float,
            "default": None,
            "help": "optional hard cap: seconds one unit attempt may run in all before its worker "
            "is stopped and the unit retried (default: none)",
        },
    ),
    ("--strict", {"action": "store_true", "help": "any manifest reject: label nothing (exit 2)"}),
    (
        "--storage-options",
        {
            "type": json_object,
            "default": None,
            "help": "JSON object of fsspec storage options for every URI (e.g. S3 endpoint, keys)",
        },
    ),
    ("--run-id", {"default": None, "help": "run id stored in every row (default: time-based)"}),
    (
        "--max-objects-per-unit",
        {
            "type": positive_int,
            "default": None,
            "help": "split videos with more objects into several units",
        },
    ),
    (
        "--images-per-unit",
        {
            "type": positive_int,
            "default": None,
            "help": "images of image lines labeled per worker call (default 16)",
        },
    ),
    (
        "--discover-every",
        {
            "type": positive_int,
            "default": None,
            "help": "for videos listed without objects (find every object): frames between the "
            "keyframes where new objects are looked for (default 15: half a second at 30 fps)",
        },
    ),
    (
        "--detector",
        {
            "choices": ["owlv2", "grounding-dino"],
            "default": None,
            "help": "for videos listed without objects: boxes of this open-vocabulary detector "
            "(Hugging Face transformers, the detect extra) on the keyframes start objects, of "
            'the categories in --text or in the line\'s own "text"',
        },
    ),
    (
        "--text",
        {
            "default": None,
            "help": 'categories the detector looks for, comma-separated (e.g. "person, dog"); '
            'a line\'s own "text" replaces them for its video',
        },
    ),
    (
        "--detector-weights",
        {
            "default": None,
            "help": "detector weights: a Hugging Face hub name, a local folder or a folder URL "
            "such as s3://bucket/owlv2/ (default "
            "google/owlv2-base-patch16-ensemble or IDEA-Research/grounding-dino-tiny)",
        },
    ),
    (
        "--detection-threshold",
        {
            "type": non_negative_float,
            "default": None,
            "help": "detector boxes scoring at or below this are dropped (default 0.2 for "
            "owlv2, 0.35 for grounding-dino)",
        },
    ),
    (
        "--torch-threads",
        {
            "type": positive_int,
            "default": None,
            "help": "torch threads per worker (default: its CPU share)",
        },
    ),
    (
        "--max-in-flight",
        {
            "type": positive_int,
            "default": None,
            "help": "units queued on workers at once (default 2 x workers)",
        },
    ),
    (
        "--videos-per-worker",
        {
            "type": positive_int,
            "default": 1,
            "help": "units each worker labels at once, their frames batched through the image "
            "encoder (for GPUs one video cannot fill; default 1)",
        },
    ),
    (
        "--dtype",
        {
            "choices": ["float32", "bfloat16"],
            "default": "float32",
            "help": "bfloat16: autocast (memory attention's feed-forward in bfloat16, the rest "
            "float32 islands) "
            "and tracking memory stored in bfloat16; for GPUs (default float32)",
        },
    ),
    (
        "--compile",
        {
            "action": "store_true",
            "help": "torch.compile the model's hot parts in each worker (slow first unit; for "
            "long GPU runs)",
        },
    ),
    (
        "--offload-memory",
        {
            "action": "store_true",
            "help": "keep tracking state (per-frame memories) in host memory, not on the GPU",
        },
    ),
    (
        "--image-size",
        {
            "type": positive_int,
            "default": None,
            "help": "model input side, a multiple of 32 (e.g. 512 or 768 instead of 1024): "
            "faster encoder, coarser masks (default: the model's)",
        },
    ),
    (
        "--no-tf32",
        {
            "action": "store_true",
            "help": "strict float32 matrix products on CUDA (default: TensorFloat-32)",
        },
    ),
    ("--no-progress", {"action": "store_true", "help": "no progress bar"}),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for flag, kwargs in OPTIONS:
        parser.add_argument(flag, **kwargs)


def add_option(parser: argparse.ArgumentParser, flag: str, **changes) -> None:
    """Add the label option ``flag`` to another command's parser, with ``changes`` (e.g. its
    own default and help) applied, so its type and checks stay those declared here."""
    (kwargs,) = [kwargs for name, kwargs in OPTIONS if name == flag]
    parser.add_argument(flag, **{**kwargs, **changes})


def command_line(args: argparse.Namespace) -> list[str]:
    """The ``jobs label`` arguments that reproduce `args` (for jobs.submit)."""
    argv: list[str] = []
    for flag, kwargs in OPTIONS:
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if kwargs.get("action") == "store_true":
            if value:
                argv.append(flag)
        elif value is not None:
            argv += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    return argv


def absolute_paths(args: argparse.Namespace) -> argparse.Namespace:
    """A copy of `args` whose local paths are absolute: the workers and the coordinator must
    name the same files whatever their working directories. (Video paths in the manifest are
    resolved against the manifest's folder, absolute once the manifest's path is.)"""
    args = argparse.Namespace(**vars(args))
    for name in ("manifest", "output", "checkpoint", "checkpoint_cache"):
        value = getattr(args, name, None)
        if value:
            setattr(args, name, absolute_uri(value))
    # --detector-weights is a hub name unless it names a local folder.
    weights = getattr(args, "detector_weights", None)
    if weights and os.path.exists(weights):
        args.detector_weights = absolute_uri(weights)
    # --model is an official name unless it names a config file.
    if args.model and os.path.exists(args.model):
        args.model = absolute_uri(args.model)
    return args


def credentials_refusal(options: dict | None) -> str | None:
    """Why `options` cannot go on a command line that joins a Ray cluster, or None when they can.

    Such a command line is kept in the cluster's job table and shown by its dashboard."""
    secrets = credential_fields(options)
    if not secrets:
        return None
    return (
        f"--storage-options field(s) {', '.join(secrets)} look like credentials; a command that "
        "joins a Ray cluster (jobs label --ray-address, jobs submit) is kept in the cluster's job "
        "table and shown by its dashboard, so they are not sent. Give the cluster nodes (and this "
        "machine) credentials through their environment or cloud role (docs/CLUSTER.md, section 6) "
        "and keep only non-secret options such as endpoint_url."
    )


def run_config(args: argparse.Namespace):
    """RunConfig from parsed arguments."""
    from pipeline.coordinator import RunConfig
    from pipeline.detectors import detector_spec
    from pipeline.device import ComputeOptions
    from pipeline.retry import RetryPolicy

    return RunConfig(
        manifest=args.manifest,
        output=args.output,
        model=args.model,
        checkpoint=args.checkpoint,
        checkpoint_cache=args.checkpoint_cache,
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        ray_address=args.ray_address,
        local_num_cpus=args.num_cpus,
        retry=RetryPolicy(
            max_attempts=args.max_attempts,
            backoff_s=args.retry_backoff,
            stall_timeout_s=args.stall_timeout,
            max_unit_s=args.unit_timeout,
        ),
        strict=args.strict,
        storage_options=args.storage_options,
        run_id=args.run_id,
        max_objects_per_unit=args.max_objects_per_unit,
        images_per_unit=args.images_per_unit,
        discover_every=args.discover_every,
        detector=detector_spec(
            args.detector, args.text, args.detector_weights, args.detection_threshold
        ),
        torch_threads=args.torch_threads,
        max_in_flight=args.max_in_flight,
        videos_per_worker=args.videos_per_worker,
        compute=ComputeOptions(
            dtype=args.dtype,
            compile=args.compile,
            offload_memory=args.offload_memory,
            image_size=args.image_size,
            tf32=not args.no_tf32,
        ),
        progress=not args.no_progress,
    )


DEFAULT_MODEL = "sam2.1_hiera_base_plus"
DEMO_MODEL = "demo"


def resolve_model(args: argparse.Namespace) -> str | None:
    """Fill in --model/--checkpoint: none given means the official DEFAULT_MODEL and its
    checkpoint by name (each node fetches it once into the cache, SHA-256 checked); 'demo'
    means the bundled model. Returns an error message, or None; says which model is used."""
    if args.model and args.model != DEMO_MODEL:
        return None
    if args.checkpoint:
        what = "--model demo brings its own weights" if args.model else "--checkpoint needs --model"
        return f"{what} (the official name or config the checkpoint belongs to)"
    if args.model == DEMO_MODEL:
        from sam2_core.demo_model import DEMO_CHECKPOINT_PATH, DEMO_CONFIG_PATH

        args.model, args.checkpoint = str(DEMO_CONFIG_PATH), str(DEMO_CHECKPOINT_PATH)
        print(
            "--model demo: using the bundled demo model (trained on synthetic scenes only; "
            "its masks of real videos are meaningless)",
            file=sys.stderr,
        )
        return None
    from sam2_core import hub

    args.model = args.checkpoint = DEFAULT_MODEL
    print(
        f"no --model given: using the official {DEFAULT_MODEL} (checkpoint fetched once per node from "
        f"{hub.base_url_default() or 'Meta'} into {hub.cache_dir(args.checkpoint_cache)}, SHA-256 checked; "
        "--model demo for the bundled demo model)",
        file=sys.stderr,
    )
    return None


def run(args: argparse.Namespace) -> int:
    from pipeline.coordinator import run_labeling
    from pipeline.detectors import detector_spec

    try:
        detector_spec(args.detector, args.text, args.detector_weights, args.detection_threshold)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    problem = resolve_model(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    if args.ray_address or os.environ.get("RAY_ADDRESS"):
        refusal = credentials_refusal(args.storage_options)
        if refusal:
            print(f"error: {refusal}", file=sys.stderr)
            return 1
    args = absolute_paths(args)
    try:
        for uri in (args.manifest, args.output, args.checkpoint, args.model):
            if uri and has_protocol(uri):
                check_reachable(uri, args.storage_options)
        result = run_labeling(run_config(args))
    except (ValueError, StorageUnreachableError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"interrupted: the units committed so far stay in {args.output} (see its summary.json); "
            "run the same command again to label the rest",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    s = result.summary
    print(
        f"run {s.run_id}: {s.units_done} unit(s) labeled, {s.skipped} already committed, "
        f"{s.failed} failed, {s.rejected} rejected; {s.frames} frames, {s.rows} rows "
        f"in {s.wall_time_s:.1f} s ({s.frames_per_s:.1f} frames/s)"
    )
    if s.failed:
        print(f"failures: {args.output.rstrip('/')}/failures/", file=sys.stderr)
    if s.rejected:
        print(f"rejects: {args.output.rstrip('/')}/rejects/", file=sys.stderr)
    return result.exit_code
