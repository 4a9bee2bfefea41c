"""Labeling claims: which unit owns each (video_id, object_id) of an output.

Two labelings of the same object (another model, checkpoint or prompts) would
give two mask rows per frame. Before a run labels anything it claims every
(video_id, object_id) of its units: one small record per key under
``_claims/``, created only if absent (``OutputStore.create_exclusive``: a hard
link on a local disk, a conditional PUT on S3). A key already claimed by the
same unit id (a re-run or a concurrent run of the same labeling) is shared;
a key claimed by another unit refuses the run, which then removes the claims
it had just created. Keys are claimed in one global order (their file names),
so of two runs that want overlapping keys at least one gets all of its keys:
the other stops at the first key it loses and holds nothing the first needs.

Claims stay while their unit is committed. A run releases the claims of its
units that end uncommitted (failed for good, or the run stopped), so that
corrected prompts can label those objects later; a run killed before that
leaves its claims, and the refusal names the claim file to delete.

An image is claimed whole (``Unit.claim_keys``: object ``pipeline.plan.WHOLE_IMAGE``, -1), so
automatic masks and prompted objects of one image never mix in an output. A video is claimed
whole (object -1) by a unit that finds its objects; such a unit is refused where another unit
holds any object of that video, and a prompted unit where another unit holds the video whole
(both would write rows for object ids 1, 2, ...). A run looks for the other kind only after
its own claims are taken, so of two such runs started at the same moment the later to look sees
the other's claims: they never both go through (both may be refused, then neither labels).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pipeline.plan import WHOLE_VIDEO, Unit
from pipeline.sink import CLAIMS_DIR, OutputStore
from pipeline.storage import join

_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Claim:
    """One (video_id, object_id) of an output owned by one unit."""

    video_id: str
    object_id: int
    unit_id: str
    run_id: str = ""
    model: str = ""
    claimed_at: str = ""


class ClaimRefused(RuntimeError):
    """Another unit owns a (video_id, object_id) that this run would label."""

    def __init__(self, wanted: Claim, holder: Claim, path: str):
        self.wanted, self.holder, self.path = wanted, holder, path
        super().__init__(
            f"video {holder.video_id!r} object {holder.object_id} is claimed by unit "
            f"{holder.unit_id} (run {holder.run_id}, model {holder.model}; claim {path})"
        )


def claim_path(store: OutputStore, video_id: str, object_id: int) -> str:
    """The claim record of one (video_id, object_id): a readable slug plus a hash."""
    digest = hashlib.sha256(json.dumps([video_id, int(object_id)]).encode("utf-8")).hexdigest()
    return join(store.root, CLAIMS_DIR, f"{_slug(video_id)}-{int(object_id)}-{digest[:32]}.json")


def _slug(video_id: str) -> str:
    return _SLUG.sub("_", video_id).strip("._")[:48] or "video"


def read_claim(store: OutputStore, video_id: str, object_id: int) -> Claim | None:
    """The claim on one key, or None."""
    record = store.read_json(claim_path(store, video_id, object_id))
    return None if record is None else Claim(**record)


def claim_units(store: OutputStore, units: Sequence[Unit], run_id: str, model: str) -> None:
    """Claim every (video_id, object_id) of `units` for its unit; raises ClaimRefused (after
    removing the claims this call created) when another unit owns one of them."""
    now = dt.datetime.now(dt.UTC).isoformat()
    wanted = {
        claim_path(store, video_id, oid): Claim(video_id, int(oid), u.unit_id, run_id, model, now)
        for u in units
        for video_id, oid in u.claim_keys
    }
    created: list[str] = []
    try:
        for path in sorted(wanted):
            claim = wanted[path]
            # Read first: a re-run finds its own claims without a refused write, and a store
            # that ignores If-None-Match still cannot overwrite a claim already there.
            holder = read_claim(store, claim.video_id, claim.object_id)
            if holder is None:
                data = json.dumps(dataclasses.asdict(claim), sort_keys=True).encode("utf-8")
                if store.create_exclusive(path, data):
                    created.append(path)
                    continue
                holder = read_claim(store, claim.video_id, claim.object_id)
                if holder is None:
                    raise OSError(f"claim {path} could be neither created nor read")
            if holder.unit_id != claim.unit_id:
                raise ClaimRefused(claim, holder, path)
        for u in units:  # only now: our claims are visible to a run of the other kind
            if not u.images:
                _refuse_the_other_kind(store, u, wanted)
    except BaseException:
        for path in created:
            store.remove(path)
        raise


def _refuse_the_other_kind(store: OutputStore, unit: Unit, wanted: dict[str, Claim]) -> None:
    """ClaimRefused when another unit holds `unit`'s video the other way: whole (objects found
    by the labeler) against object by object (prompted objects)."""
    whole = unit.object_ids == (WHOLE_VIDEO,)
    mine = next(c for c in wanted.values() if c.unit_id == unit.unit_id)
    if not whole:
        path = claim_path(store, unit.video_id, WHOLE_VIDEO)
        holder = read_claim(store, unit.video_id, WHOLE_VIDEO)
        if holder is not None and holder.unit_id != unit.unit_id:
            raise ClaimRefused(mine, holder, path)
        return
    folder = join(store.root, CLAIMS_DIR)
    store.fs.invalidate_cache(folder)
    prefix = _slug(unit.video_id) + "-"  # the claims of this video (and of videos sharing its slug)
    for path in sorted(store.fs.ls(folder, detail=False)):
        if not path.rsplit("/", 1)[-1].startswith(prefix):
            continue
        record = store.read_json(path)
        holder = None if record is None else Claim(**record)
        if (
            holder is not None
            and holder.video_id == unit.video_id
            and holder.object_id != WHOLE_VIDEO
            and holder.unit_id != unit.unit_id
        ):
            raise ClaimRefused(mine, holder, path)


def release_units(store: OutputStore, units: Iterable[Unit]) -> None:
    """Remove the claims these units hold, for those not committed (never another unit's)."""
    committed = store.committed_units()
    for unit in units:
        if unit.unit_id in committed:
            continue
        for video_id, oid in unit.claim_keys:
            holder = read_claim(store, video_id, oid)
            if holder is not None and holder.unit_id == unit.unit_id:
                store.remove(claim_path(store, video_id, oid))
