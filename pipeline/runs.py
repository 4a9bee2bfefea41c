"""A finished run's inputs: the manifest its ``summary.json`` names, read back into jobs.

The mask table keeps video ids, not video locations or prompts; previews (which
need the frames) and imported corrections (which keep the original prompts)
find both in the run's manifest.
"""

from __future__ import annotations

from pipeline.manifest import VideoJob, read_manifest
from pipeline.sink import SUMMARY_FILE, OutputStore
from pipeline.storage import join


def run_manifest(run_uri: str, storage_options: dict | None = None) -> str:
    """The manifest URI that ``run_uri``'s ``summary.json`` records."""
    store = OutputStore(run_uri, storage_options)
    data = store.read_json(join(store.root, SUMMARY_FILE))
    if data is None:
        raise FileNotFoundError(
            f"{run_uri}: no {SUMMARY_FILE} naming the run's manifest; give it with --manifest"
        )
    manifest = data.get("manifest")
    if not isinstance(manifest, str) or not manifest:
        raise ValueError(f"{run_uri}: {SUMMARY_FILE} names no manifest; give it with --manifest")
    return manifest


def run_jobs(
    run_uri: str, storage_options: dict | None = None, manifest: str | None = None
) -> tuple[str, dict[str, VideoJob]]:
    """(manifest URI, its valid jobs by video_id): ``manifest`` if given, else the one the
    run's summary names. Entries the manifest rejects were not labeled and are left out."""
    manifest = manifest or run_manifest(run_uri, storage_options)
    jobs, _ = read_manifest(manifest, storage_options=storage_options)
    return manifest, {job.video_id: job for job in jobs}
