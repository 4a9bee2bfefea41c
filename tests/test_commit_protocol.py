"""Labeling claims and what a run leaves behind: two labelings of the same objects can never
both write an output (the claim decides, on a local disk and on S3); a run that is refused or
stops writes nothing and loses nothing written before."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pyarrow.dataset as pads
import pytest
from labeling_helpers import make_clip, run_config, write_jsonl
from s3_server import start_s3

from pipeline.claims import ClaimRefused, claim_units, read_claim, release_units
from pipeline.coordinator import RunFatalError, run_labeling
from pipeline.manifest import ObjectSpec, Prompt, Reject, VideoJob
from pipeline.masks import MASK_SCHEMA
from pipeline.plan import plan_units
from pipeline.records import RunSummary, UnitFailure
from pipeline.sink import OutputStore, arrow_filesystem

BUCKET = "claim-tests"


@pytest.fixture(scope="module")
def s3():
    with start_s3(buckets=[BUCKET]) as server:
        yield server


def labeling(shift: int, videos=("cups", "dogs", "cats"), objects=(1, 2)) -> list:
    """Units of one labeling; another `shift` moves every click: the same objects, other ids."""
    jobs = [
        VideoJob(
            video=f"/videos/{video}.mp4",
            video_id=video,
            objects=tuple(
                ObjectSpec(
                    oid, (Prompt(frame=0, points=((10.0 + shift, 20.0 * oid),), labels=(1,)),)
                )
                for oid in objects
            ),
            location=f"m.jsonl line {index + 1}",
        )
        for index, video in enumerate(videos)
    ]
    identities = {job.video: "size=1" for job in jobs}
    return plan_units(jobs, "model", None, max_objects_per_unit=1, identities=identities)


def holders(store: OutputStore, units) -> set[str | None]:
    found = set()
    for unit in units:
        for oid in unit.object_ids:
            claim = read_claim(store, unit.video_id, oid)
            found.add(None if claim is None else claim.unit_id)
    return found


def test_of_two_labelings_claiming_at_once_exactly_one_gets_the_objects(output):
    uri, options = output
    first, second = labeling(shift=0), labeling(shift=1)
    for round_ in range(6):
        store = OutputStore(f"{uri}/{round_}", options)
        barrier = threading.Barrier(2)
        outcome: dict[str, object] = {}

        def claim(name, units, store=store, barrier=barrier, outcome=outcome):
            mine = OutputStore(
                store.output_uri, {**options, "skip_instance_cache": True} if options else None
            )
            barrier.wait()
            try:
                claim_units(mine, units, run_id=name, model="m")
                outcome[name] = "claimed"
            except ClaimRefused as err:
                outcome[name] = err

        # the second labeling lists its videos in another order: claims are taken in key order
        threads = [
            threading.Thread(target=claim, args=("a", first)),
            threading.Thread(target=claim, args=("b", list(reversed(second)))),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(str(v) == "claimed" for v in outcome.values()) == [False, True], outcome
        winner = first if outcome["a"] == "claimed" else second
        assert holders(store, first) == {u.unit_id for u in winner}  # the loser holds nothing


def test_a_labeling_shares_its_own_claims_and_other_videos_stay_free(output):
    uri, options = output
    store = OutputStore(uri, options)
    first = labeling(shift=0, videos=("cups",))
    claim_units(store, first, run_id="r1", model="m")
    claim_units(store, first, run_id="r2", model="m")  # a re-run (or a second run) of it
    claim_units(store, labeling(shift=5, videos=("dogs",)), run_id="r3", model="m")
    other = labeling(shift=1, videos=("cups",), objects=(2, 3))
    with pytest.raises(ClaimRefused, match="'cups' object 2 is claimed by unit") as refused:
        claim_units(store, other, run_id="r4", model="m2")
    assert refused.value.holder.run_id == "r1"
    assert read_claim(store, "cups", 3) is None  # what the refused call had created is gone
    # a committed unit keeps its claims; the others are released for a later labeling
    store.commit_unit(first[0].unit_id, MASK_SCHEMA.empty_table(), {})
    release_units(store, first)
    assert read_claim(store, "cups", 1).unit_id == first[0].unit_id
    assert read_claim(store, "cups", 2) is None
    claim_units(store, labeling(shift=1, videos=("cups",), objects=(2,)), run_id="r5", model="m2")


# ---------------------------------------------------------------- runs (no Ray: refused early)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, videos_dir) -> str:
    folder = tmp_path_factory.mktemp("claim-clips")
    return str(make_clip(videos_dir / "01_dog.mp4", folder / "dog.mp4", frames=12))


def manifest(folder: Path, clip: str, shift: int, name: str, bad_line: bool = False) -> Path:
    entries = [
        {
            "video": clip,
            "video_id": "dog",
            "objects": [
                {
                    "object_id": 1,
                    "prompts": [{"frame": 0, "points": [[64 + shift, 50]], "labels": [1]}],
                }
            ],
        }
    ]
    if bad_line:
        entries.append({"video": clip, "video_id": "bad", "objects": [{"object_id": 1}]})
    return write_jsonl(folder / name, entries)


def earlier_results(store: OutputStore) -> dict[str, bytes]:
    """What an earlier run left: rejects, failures and a summary (their bytes)."""
    store.write_rejects([Reject("m.jsonl line 4", "box", "x2 <= x1", "{}")], "m.jsonl")
    store.write_failures(
        [UnitFailure("cat-1", "/cat.mp4", "cat", (1,), "m.jsonl line 3", 1, "OSError", True, "x")]
    )
    store.write_summary(RunSummary("r0", "m.jsonl", "out", "m@1", None, None, "t0", rejected=1))
    return snapshot(store)


def snapshot(store: OutputStore) -> dict[str, bytes]:
    root = Path(store.root)
    names = ("rejects/rejects.parquet", "failures/failures.parquet", "summary.json")
    return {name: (root / name).read_bytes() for name in names if (root / name).exists()}


def test_a_refused_or_fatal_run_leaves_earlier_results_as_they_were(tmp_path, clip, mini_a_dir):
    out = tmp_path / "out"
    store = OutputStore(str(out))
    before = earlier_results(store)
    other = manifest(tmp_path, clip, shift=0, name="a.jsonl")
    shifted = manifest(tmp_path, clip, shift=1, name="a_shifted.jsonl", bad_line=True)
    jobs = _jobs(other)
    units = plan_units(jobs, "x", None, identities={job.video: "size=1" for job in jobs})
    claim_units(store, units, run_id="running", model="other@1")
    with pytest.raises(
        RunFatalError, match="'dog' object 1 is claimed by another labeling.*_claims/"
    ):
        run_labeling(run_config(shifted, out, mini_a_dir))
    assert snapshot(store) == before
    with pytest.raises(RunFatalError, match="checkpoint"):
        run_labeling(run_config(shifted, out, mini_a_dir, checkpoint=str(tmp_path / "none.pt")))
    assert snapshot(store) == before


def test_a_refusal_for_committed_masks_of_an_older_output_writes_nothing(
    tmp_path, clip, mini_a_dir
):
    # outputs written before claims existed hold commits without claims
    out = tmp_path / "out"
    store = OutputStore(str(out))
    meta = {"video_id": "dog", "object_ids": [1], "model": "older-model@0123456789ab"}
    store.commit_unit("dog-0123456789abcdef01234567", MASK_SCHEMA.empty_table(), meta)
    before = earlier_results(store)
    with pytest.raises(RunFatalError, match="older-model@0123456789ab"):
        run_labeling(run_config(manifest(tmp_path, clip, 1, "b.jsonl", True), out, mini_a_dir))
    assert snapshot(store) == before
    assert not (out / "_claims").exists() or list((out / "_claims").iterdir()) == []


def test_a_strict_run_that_labels_nothing_keeps_the_earlier_failures(tmp_path, clip, mini_a_dir):
    out = tmp_path / "out"
    store = OutputStore(str(out))
    earlier_results(store)
    bad = manifest(tmp_path, clip, 0, "m.jsonl", bad_line=True)
    result = run_labeling(run_config(bad, out, mini_a_dir, strict=True))
    assert result.exit_code == 2
    assert [f.unit_id for f in store.read_failures()] == ["cat-1"]
    assert {row["manifest"] for row in store.read_rejects()} == {"m.jsonl", str(bad)}
    assert json.loads((out / "summary.json").read_text())["status"] == "rejected"
    assert not (out / "_claims").exists() or list((out / "_claims").iterdir()) == []


def test_an_output_in_this_process_memory_is_refused(tmp_path, clip, mini_a_dir):
    with pytest.raises(RunFatalError, match="memory.*Ray workers"):
        run_labeling(run_config(manifest(tmp_path, clip, 0, "m.jsonl"), "memory://out", mini_a_dir))


def _jobs(path: Path) -> list[VideoJob]:
    from pipeline.manifest import read_manifest

    return read_manifest(str(path))[0]


# ---------------------------------------------------------------- two real runs at once


@pytest.mark.slow
def test_two_runs_with_other_prompts_into_one_output_never_give_two_rows_per_key(
    ray_local, tmp_path, clip, mini_a_dir
):
    out = tmp_path / "out"
    runs = {
        "a": manifest(tmp_path, clip, shift=0, name="a.jsonl"),
        "b": manifest(tmp_path, clip, shift=1, name="a_shifted.jsonl"),
    }
    barrier = threading.Barrier(2)
    outcome: dict[str, object] = {}

    def run(name: str) -> None:
        barrier.wait()
        try:
            outcome[name] = run_labeling(run_config(runs[name], out, mini_a_dir, workers=1))
        except RunFatalError as err:
            outcome[name] = err

    threads = [threading.Thread(target=run, args=(name,)) for name in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [name for name, value in outcome.items() if isinstance(value, RunFatalError)]
    assert len(refused) == 1, outcome
    (winner,) = set(runs) - set(refused)
    assert outcome[winner].exit_code == 0
    table = pads.dataset(
        str(out / "masks"), format="parquet", filesystem=arrow_filesystem(OutputStore(str(out)).fs)
    ).to_table()
    keys = list(
        zip(*(table.column(c).to_pylist() for c in ("video_id", "object_id", "frame_index")))
    )
    assert len(keys) == len(set(keys)) == 12
    # the winner's labeling resumes (nothing to do); the other one stays refused
    again = run_labeling(run_config(runs[winner], out, mini_a_dir, workers=1))
    assert (again.exit_code, again.summary.skipped, again.summary.units_done) == (0, 1, 0)
    with pytest.raises(
        RunFatalError, match="already holds masks of video .dog. object 1 .*other prompts"
    ):
        run_labeling(run_config(runs[refused[0]], out, mini_a_dir, workers=1))


def discovery(videos=("cups",)) -> list:
    """Units that find every object of `videos` (no prompts): each claims its video whole."""
    jobs = [
        VideoJob(f"/videos/{v}.mp4", v, (), f"d.jsonl line {i + 1}") for i, v in enumerate(videos)
    ]
    return plan_units(jobs, "model", None, identities={job.video: "size=1" for job in jobs})


@pytest.mark.parametrize("first_kind", ["prompted", "found"])
def test_found_and_prompted_objects_of_one_video_never_mix_in_an_output(output, first_kind):
    """Objects found by the labeler and prompted objects both use ids 1, 2, ...: one labeling
    of a video of either kind refuses the other kind, whichever came first."""
    uri, options = output
    store = OutputStore(uri, options)
    prompted, found = labeling(shift=0, videos=("cups",)), discovery(("cups",))
    first, second = (prompted, found) if first_kind == "prompted" else (found, prompted)
    claim_units(store, first, run_id="first", model="m@1")
    with pytest.raises(ClaimRefused) as refused:
        claim_units(store, second, run_id="second", model="m@1")
    assert refused.value.holder.unit_id in {u.unit_id for u in first}
    assert holders(store, second) == {None}  # the refused run left no claim behind
    claim_units(store, first, run_id="again", model="m@1")  # the same labeling resumes
    claim_units(store, discovery(("dogs",)), run_id="other", model="m@1")  # other videos: free


@pytest.mark.parametrize("first_kind", ["prompted", "found"])
def test_found_and_prompted_claims_at_the_same_moment_never_both_go_through(
    output, first_kind, monkeypatch
):
    """The worst interleaving of two runs started together: the first has taken its claims but
    not yet looked for the other kind when the second runs from start to end. Each run takes
    its claims before it looks for the other kind's, so one of them sees the other's."""
    import pipeline.claims as claims

    uri, options = output
    store = OutputStore(uri, options)
    prompted, found = labeling(shift=0, videos=("cups",)), discovery(("cups",))
    first, second = (prompted, found) if first_kind == "prompted" else (found, prompted)
    real_check = claims._refuse_the_other_kind
    outcome: dict[str, str] = {}

    def second_runs_in_between(store_, unit, wanted):
        if "second" not in outcome:
            outcome["second"] = "running"
            try:
                claim_units(store, second, run_id="second", model="m@1")
                outcome["second"] = "claimed"
            except ClaimRefused:
                outcome["second"] = "refused"
        return real_check(store_, unit, wanted)

    monkeypatch.setattr(claims, "_refuse_the_other_kind", second_runs_in_between)
    try:
        claim_units(store, first, run_id="first", model="m@1")
        outcome["first"] = "claimed"
    except ClaimRefused:
        outcome["first"] = "refused"
    assert outcome["second"] == "refused" and outcome["first"] == "claimed", outcome
    assert holders(store, second) - holders(store, first) <= {None}
    assert holders(store, first) == {u.unit_id for u in first}
