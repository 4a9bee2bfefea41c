"""``jobs train --workers N``: data-parallel training on Ray Train (``TorchTrainer``).

The same command runs on a laptop (a local Ray, gloo on CPU) and on a cluster
(``--ray-address`` or ``$RAY_ADDRESS``, NCCL with ``--gpus-per-worker``). Every worker builds
the same :class:`jobs.train.TrainJob` and forwards its share of each step's global batch;
gradients are summed across workers (:mod:`sam2_core.training.replicas`). Worker 0 writes
``--output`` and hands each checkpoint to Ray Train, which persists it under ``--storage``
(any fsspec URI); when a worker is lost, Ray Train restarts the group (``--max-failures``)
and every worker resumes from the last persisted checkpoint.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pipeline.storage import is_local, join, safe_uri, url_to_fs
from pipeline.training.output import TrainOutput
from sam2_core.training import CONFIG_FILE, MODEL_FILE, STATE_FILE

CHECKPOINT_FILES = (MODEL_FILE, CONFIG_FILE, STATE_FILE)


def _worker_loop(config: dict) -> None:
    """One Ray Train worker: resume from Ray's checkpoint if there is one, then train."""
    import ray.train
    import torch

    from jobs.train import TrainJob, log_line
    from sam2_core.training import Replicas

    args: argparse.Namespace = config["args"]
    torch.set_num_threads(max(int(args.threads), 1))
    context = ray.train.get_context()
    replicas = Replicas(context.get_world_rank(), context.get_world_size())
    if args.gpus_per_worker > 0:
        args = argparse.Namespace(**{**vars(args), "device": str(ray.train.torch.get_device())})
    resume = bool(args.resume)
    output = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restart after a lost worker: every worker loads the same files
        if replicas.is_main:  # the run's own folder (or a URL output's staging folder)
            output = TrainOutput.open(args.output, args.storage_options)
            work = output.local
        else:
            work = Path(tempfile.mkdtemp(prefix="train-replica-"))
        work.mkdir(parents=True, exist_ok=True)
        with checkpoint.as_directory() as folder:
            for name in CHECKPOINT_FILES:
                shutil.copy2(Path(folder) / name, work / name)
        args = argparse.Namespace(**{**vars(args), "output": str(work)})
        resume = True
    job = TrainJob(args, replicas=replicas, resume=resume, output=output)
    trainer = job.trainer
    if replicas.is_main:
        print(
            f"worker 0 of {replicas.world_size}: step {trainer.step}; data: {job.describe_data()}",
            flush=True,
        )
    started = time.time()

    def on_log(stats) -> None:
        if replicas.is_main:
            print(log_line(stats, trainer.config.steps, started), flush=True)

    def on_checkpoint(step: int, path: Path) -> None:
        if not replicas.is_main:
            ray.train.report({"step": step}, checkpoint=None)
            return
        line = job.score(step)
        job.output.push()
        print(f"checkpoint step {step}: {job.output.describe(MODEL_FILE)}{line}", flush=True)
        with tempfile.TemporaryDirectory(prefix="train-ckpt-") as folder:
            for name in CHECKPOINT_FILES:
                shutil.copy2(Path(path).parent / name, Path(folder) / name)
            ray.train.report({"step": step}, checkpoint=ray.train.Checkpoint.from_directory(folder))

    trainer.train(on_log=on_log, on_checkpoint=on_checkpoint)
    if replicas.is_main:
        job.output.close()


def _ray_storage(storage: str, args: argparse.Namespace):
    """Ray Train's storage (path, filesystem): a local path as it is; a URL through our own
    fsspec filesystem with the run's storage options (so an S3 endpoint, region or keys given
    there reach Ray Train too, which would otherwise resolve the URL on its own)."""
    fs, path = url_to_fs(storage, args.storage_options)
    if is_local(fs):
        return path, None
    import pyarrow.fs as pafs

    return path, pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def run_distributed(args: argparse.Namespace) -> int:
    """Train on ``args.workers`` Ray Train workers; 0 done, 1 bad options or a failed run."""
    try:
        import ray
        import ray.train
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError as err:
        print(
            f"train: --workers needs Ray Train ({err}); install the project's `train` extra",
            file=sys.stderr,
        )
        return 1
    if args.batch_size % args.workers:
        print(
            f"train: --batch-size {args.batch_size} does not split evenly over {args.workers} workers",
            file=sys.stderr,
        )
        return 1
    from jobs.train import absolute_paths

    args = absolute_paths(args)
    storage, storage_fs = _ray_storage(args.storage or join(args.output, "ray"), args)
    if not ray.is_initialized():
        ray.init(address=args.ray_address, log_to_driver=True)
    use_gpu = args.gpus_per_worker > 0
    resources = {"CPU": args.cpus_per_worker} | ({"GPU": args.gpus_per_worker} if use_gpu else {})
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"args": args},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=args.workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=args.output.rstrip("/").rpartition("/")[2] or "train",
            storage_path=storage,
            storage_filesystem=storage_fs,
            failure_config=ray.train.FailureConfig(max_failures=args.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        result = trainer.fit()
    except Exception as err:  # Ray Train wraps the workers' errors
        print(f"train: the distributed run failed: {err}", file=sys.stderr)
        return 1
    print(
        f"done: {args.workers} workers; model {safe_uri(join(args.output, MODEL_FILE))}; "
        f"Ray Train checkpoint {result.checkpoint}",
        flush=True,
    )
    return 0
