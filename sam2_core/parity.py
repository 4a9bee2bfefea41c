"""Parity with the official SAM 2 code: replay recorded cases, compare outputs, list checkpoint keys.

Run as ``python -m sam2_core.parity <command>``:

- ``replay CASE_DIR OUT_DIR``: build the model of CASE_DIR (``config.json`` + ``checkpoint.pt``),
  replay the recorded image case through the public ``ImagePredictor`` API into
  ``OUT_DIR/image_case.npz`` (and the video cases through ``sam2_core.parity_video`` when
  that module exists).
- ``compare CASE_DIR OUT_DIR``: compare every case file in OUT_DIR with the reference under
  the tolerances of the reference README; exit 1 when any case is outside them.
- ``keys NAME``: the state-dict names and shapes of an official model as JSON, in the
  layout of ``sam2_reference/keys/NAME.json``.

The reference data and its tolerances are described in ``../shared/sam2_reference/README.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

IMAGE_CASE = "image_case.npz"
VIDEO_CASE = "video_case.npz"
LONG_CASE = "long_case.npz"
CASE_FILES = (IMAGE_CASE, VIDEO_CASE, LONG_CASE)

IMAGE_QUERIES = ("point1", "points3", "box", "box_point", "refine")
ENCODER_KEYS = (
    "input_tensor",
    *(f"backbone_fpn{i}" for i in range(3)),
    *(f"vision_pos_enc{i}" for i in range(3)),
    "image_embed",
    "high_res_feat0",
    "high_res_feat1",
)

ABSENT_LOGIT = -1024.0
"""Every logit of an object judged absent on a frame (the official convention)."""

_INPUT_KEYS = {"image", "frames", "images", "in.mask"}
_FRAME_KEY = re.compile(r"^(?P<tag>[^.]+)\.f(?P<frame>\d+)\.o(?P<obj>\d+)$")


@dataclass(frozen=True)
class Tolerance:
    """How close one case must be to the reference (README, "How close is close enough").

    max_abs: largest allowed |ours - reference| on any compared array;
    max_sign_flip_fraction: for mask logits, the largest allowed fraction of logits whose
    sign differs, counted over the whole case (None: not checked, as for the image case).
    """

    max_abs: float
    max_sign_flip_fraction: float | None = None


TOLERANCES: dict[str, Tolerance] = {
    IMAGE_CASE: Tolerance(1e-4),
    VIDEO_CASE: Tolerance(2e-3, 1e-4),
    LONG_CASE: Tolerance(1e-2, 1e-4),
}


# ---------------------------------------------------------------------------
# replay
# ---------------------------------------------------------------------------


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"missing file: {path}")
    return path


def load_case_model(case_dir: str | Path):
    """The model of a reference case directory: ``config.json`` + ``checkpoint.pt``, CPU, eval."""
    from .build import build_model

    case_dir = Path(case_dir)
    if not case_dir.is_dir():
        raise FileNotFoundError(f"case directory not found: {case_dir}")
    config = _require_file(case_dir / "config.json")
    checkpoint = _require_file(case_dir / "checkpoint.pt")
    return build_model(str(config), str(checkpoint))


def _query_inputs(case: Mapping[str, np.ndarray], query: str) -> dict:
    prefix = f"{query}.in."
    args = {k[len(prefix) :]: case[k] for k in case if k.startswith(prefix)}
    if not args:
        raise ValueError(f"image case has no inputs for query {query!r} (no '{prefix}*' keys)")
    if "multimask_output" in args:
        args["multimask_output"] = bool(args["multimask_output"])
    return args


def replay_image_case(case: Mapping[str, np.ndarray], model) -> dict[str, np.ndarray]:
    """Run the recorded image case through ``ImagePredictor``; returns arrays keyed as the reference.

    Encoder outputs are taken from the predictor's features (``backbone_fpn2`` before, and
    ``image_embed`` after, ``no_mem_embed`` is added), queries via ``predict(..., return_logits=True)``.
    """
    from .predictor import ImagePredictor
    from .transforms import image_to_input

    if "image" not in case:
        raise ValueError("image case has no 'image' array")
    image = case["image"]
    out: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        x = image_to_input(image, model.image_size, model.device)
        raw = model.encode_image(x)
        out["input_tensor"] = x
        for i, (level, pos) in enumerate(zip(raw.levels, raw.pos)):
            out[f"backbone_fpn{i}"] = level
            out[f"vision_pos_enc{i}"] = pos

        predictor = ImagePredictor(model)
        predictor.set_image(image)
        feats = predictor.features
        out["image_embed"] = feats.embedding
        for i, level in enumerate(feats.high_res):
            out[f"high_res_feat{i}"] = level

        for query in IMAGE_QUERIES:
            pred = predictor.predict(**_query_inputs(case, query), return_logits=True)
            out[f"{query}.out.masks"] = pred.masks
            out[f"{query}.out.iou"] = pred.ious
            out[f"{query}.out.low_res"] = pred.low_res_logits
    return {k: v.detach().cpu().float().numpy() for k, v in out.items()}


def _video_replayer() -> Callable | None:
    """``sam2_core.parity_video.replay_video_cases`` when that module exists, else None."""
    if importlib.util.find_spec("sam2_core.parity_video") is None:
        return None
    from . import parity_video

    return parity_video.replay_video_cases


def replay(case_dir: str | Path, out_dir: str | Path, video: bool = True) -> list[Path]:
    """Replay every case of ``case_dir`` into ``out_dir``; returns the files written."""
    case_dir, out_dir = Path(case_dir), Path(out_dir)
    model = load_case_model(case_dir)
    image_case = np.load(_require_file(case_dir / IMAGE_CASE))
    outputs = replay_image_case(image_case, model)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / IMAGE_CASE]
    np.savez(written[0], **outputs)
    print(f"wrote {written[0]} ({len(outputs)} arrays)")
    if video:
        replayer = _video_replayer()
        if replayer is None:
            print("video replay is not available yet (no sam2_core.parity_video); skipped")
        else:
            replayer(case_dir, out_dir, model)
            written += [
                out_dir / name for name in (VIDEO_CASE, LONG_CASE) if (out_dir / name).exists()
            ]
    return written


# ---------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------


def is_input_key(key: str) -> bool:
    """Keys that hold recorded inputs, not outputs (never compared)."""
    return key in _INPUT_KEYS or ".in." in key


def is_internal_key(key: str) -> bool:
    """Debugging keys: compared and reported, never failing."""
    return key.startswith("internal.")


@dataclass
class KeyResult:
    """One compared array. ``problem`` is None when the key is within tolerance."""

    key: str
    max_abs: float
    sign_flips: int = 0
    count: int = 0
    problem: str | None = None
    informative: bool = False  # internal.* keys: reported, never failing


@dataclass
class CaseResult:
    """Comparison of one case file."""

    name: str
    tolerance: Tolerance
    keys: list[KeyResult] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sign_flips: int = 0
    logits: int = 0

    @property
    def passed(self) -> bool:
        return not self.failures


def _max_abs(ours: np.ndarray, ref: np.ndarray) -> float:
    if ours.size == 0:
        return 0.0
    diff = np.abs(ours.astype(np.float64) - ref.astype(np.float64))
    if np.isnan(diff).any():
        return float("inf")
    return float(diff.max())


def _is_absent(x: np.ndarray) -> bool:
    return x.size > 0 and bool(np.all(x == ABSENT_LOGIT))


def _compare_key(
    key: str, ours: np.ndarray, ref: np.ndarray, tol: Tolerance, is_logit: bool
) -> KeyResult:
    informative = is_internal_key(key)
    if ours.shape != ref.shape:
        return KeyResult(
            key,
            float("inf"),
            problem=f"shape {ours.shape} != reference {ref.shape}",
            informative=informative,
        )
    if ref.dtype == np.bool_ or ours.dtype == np.bool_:
        diff = float(np.count_nonzero(ours.astype(bool) != ref.astype(bool)))
        problem = None if diff == 0 else f"{int(diff)} booleans differ"
        return KeyResult(key, diff, problem=problem, informative=informative)
    worst = _max_abs(ours, ref)
    result = KeyResult(key, worst, informative=informative)
    problems = []
    if not worst <= tol.max_abs:
        problems.append(f"max |diff| {worst:.3g} > {tol.max_abs:g}")
    if is_logit:
        result.count = int(ref.size)
        result.sign_flips = int(np.count_nonzero((ours > 0) != (ref > 0)))
        if _is_absent(ref) != _is_absent(ours):
            who = "reference" if _is_absent(ref) else "ours"
            problems.append(f"object absent (all {ABSENT_LOGIT:g}) only in {who}")
    result.problem = "; ".join(problems) or None
    return result


def compare_arrays(
    name: str,
    ours: Mapping[str, np.ndarray],
    ref: Mapping[str, np.ndarray],
    tol: Tolerance | None = None,
) -> CaseResult:
    """Compare one case's outputs with the reference's under ``tol`` (default: TOLERANCES[name])."""
    tol = tol or TOLERANCES[name]
    res = CaseResult(name, tol)
    ref_keys = [k for k in ref if not is_input_key(k)]
    missing_internal = []
    for key in ref_keys:
        informative = is_internal_key(key)
        if key not in ours:
            if informative:
                missing_internal.append(key)
            else:
                res.failures.append(f"{key}: missing from our output")
            continue
        is_logit = tol.max_sign_flip_fraction is not None and bool(_FRAME_KEY.match(key))
        kr = _compare_key(key, np.asarray(ours[key]), np.asarray(ref[key]), tol, is_logit)
        res.keys.append(kr)
        if is_logit:
            res.sign_flips += kr.sign_flips
            res.logits += kr.count
        if kr.problem:
            (res.notes if informative else res.failures).append(f"{key}: {kr.problem}")
    if missing_internal:
        res.notes.append(
            f"{len(missing_internal)} internal.* debugging keys not in our output (not compared), e.g. {missing_internal[0]}"
        )
    for key in sorted(set(ours) - set(ref)):
        if is_input_key(key):
            continue
        (res.notes if is_internal_key(key) else res.failures).append(
            f"{key}: in our output but not in the reference"
        )
    if tol.max_sign_flip_fraction is not None and res.logits:
        frac = res.sign_flips / res.logits
        if frac > tol.max_sign_flip_fraction:
            res.failures.append(
                f"{res.sign_flips} of {res.logits} logits change sign ({frac:.2e} > {tol.max_sign_flip_fraction:g})"
            )
    return res


def _group(key: str) -> str:
    """Table row for a key: video logits grouped by step tag, everything else by itself."""
    m = _FRAME_KEY.match(key)
    if m:
        return f"{m['tag']}.*"
    if is_internal_key(key):
        parts = key.split(".")
        return ".".join(parts[:3] + ["*", parts[-1]]) if len(parts) >= 5 else key
    return key


def format_case(res: CaseResult) -> str:
    """A compact table: one row per key (video: per step tag), worst |diff|, sign flips, status."""
    rows: dict[str, list[KeyResult]] = {}
    for kr in res.keys:
        rows.setdefault(_group(kr.key), []).append(kr)
    width = max([len(g) for g in rows] + [10])
    lines = [
        f"== {res.name} (max |diff| <= {res.tolerance.max_abs:g})",
        f"{'key':<{width}}  {'n':>4}  {'max|diff|':>10}  {'flips':>6}  status",
    ]
    for group, items in rows.items():
        worst = max(kr.max_abs for kr in items)
        flips = sum(kr.sign_flips for kr in items)
        bad = [kr for kr in items if kr.problem]
        if not bad:
            status = "ok"
        elif all(kr.informative for kr in items):
            status = "differs (internal, not failing)"
        else:
            status = "FAIL"
        lines.append(f"{group:<{width}}  {len(items):>4}  {worst:>10.3g}  {flips:>6}  {status}")
    if res.logits:
        lines.append(f"sign flips: {res.sign_flips} of {res.logits} logits")
    lines += [f"  note: {n}" for n in res.notes]
    lines += [f"  FAIL: {f}" for f in res.failures]
    lines.append(f"{res.name}: {'PASS' if res.passed else 'FAIL'}")
    return "\n".join(lines)


def compare(case_dir: str | Path, out_dir: str | Path) -> list[CaseResult]:
    """Compare every case file present in ``out_dir`` with ``case_dir``'s reference."""
    case_dir, out_dir = Path(case_dir), Path(out_dir)
    if not case_dir.is_dir():
        raise FileNotFoundError(f"case directory not found: {case_dir}")
    if not out_dir.is_dir():
        raise FileNotFoundError(f"output directory not found: {out_dir}")
    present = [name for name in CASE_FILES if (out_dir / name).is_file()]
    if not present:
        raise FileNotFoundError(f"no case files ({', '.join(CASE_FILES)}) in {out_dir}")
    results = []
    for name in present:
        ref = np.load(_require_file(case_dir / name))
        ours = np.load(out_dir / name)
        results.append(compare_arrays(name, ours, ref))
    return results


# ---------------------------------------------------------------------------
# keys
# ---------------------------------------------------------------------------


def model_keys(name: str) -> dict:
    """``{"config", "num_parameters", "tensors"}`` of an official model, built on the meta device."""
    from .build import build_meta
    from .config_tree import OFFICIAL_CONFIG_FILES

    if name not in OFFICIAL_CONFIG_FILES:
        raise ValueError(
            f"unknown model {name!r}; official names: {', '.join(sorted(OFFICIAL_CONFIG_FILES))}"
        )
    model = build_meta(name)
    return {
        "config": OFFICIAL_CONFIG_FILES[name],
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "tensors": {k: list(v.shape) for k, v in model.state_dict().items()},
    }


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sam2_core.parity", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("replay", help="replay a reference case directory through our model")
    p.add_argument("case_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--image-only", action="store_true", help="skip the video cases")
    p = sub.add_parser("compare", help="compare replayed outputs with the reference")
    p.add_argument("case_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p = sub.add_parser("keys", help="state-dict names and shapes of an official model as JSON")
    p.add_argument("name")
    args = parser.parse_args(argv)

    try:
        if args.command == "replay":
            replay(args.case_dir, args.out_dir, video=not args.image_only)
            return 0
        if args.command == "compare":
            results = compare(args.case_dir, args.out_dir)
            for res in results:
                print(format_case(res))
            return 0 if all(r.passed for r in results) else 1
        print(json.dumps(model_keys(args.name), indent=1))
        return 0
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
