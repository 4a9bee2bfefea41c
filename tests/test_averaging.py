"""Weight averaging: the mean of checkpoints, refused when they do not match, and its command."""

from __future__ import annotations

import json

import pytest
import torch
from training_helpers import tiny_tree

from jobs.__main__ import main as jobs_main
from sam2_core.checkpoint import CheckpointError, read_state_dict
from sam2_core.hub import read_bytes, sha256_file
from sam2_core.training import average_state_dicts, build_for_training


def random_state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model, _ = build_for_training(tiny_tree())
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_average_is_the_elementwise_mean_in_the_stored_dtype():
    a, b, c = random_state(0), random_state(1), random_state(2)
    half_c = {k: v.half() if v.is_floating_point() else v for k, v in c.items()}
    mean = average_state_dicts([half_c, a, b])
    name = next(
        k
        for k, v in a.items()
        if v.is_floating_point() and v.numel() > 10 and not torch.equal(v, b[k])
    )
    expected = (c[name].half().float() + a[name] + b[name]) / 3
    assert mean[name].dtype == torch.float16
    assert torch.allclose(mean[name].float(), expected, atol=1e-3)
    assert not torch.allclose(mean[name].float(), a[name], atol=1e-3)
    assert set(mean) == set(a)


def test_mismatched_checkpoints_are_refused_with_their_names():
    a, b = random_state(0), random_state(1)
    b_missing = dict(b)
    dropped = sorted(b_missing)[0]
    b_missing.pop(dropped)
    with pytest.raises(CheckpointError, match=f"only in first.pt: {dropped}"):
        average_state_dicts([a, b_missing], ["first.pt", "second.pt"])
    name = next(k for k, v in b.items() if v.is_floating_point() and v.ndim == 2 and v.shape[0] > 1)
    b_shape = dict(b, **{name: b[name][:1]})
    with pytest.raises(CheckpointError, match=f"differ in shape: {name}"):
        average_state_dicts([a, b_shape], ["first.pt", "second.pt"])
    with pytest.raises(ValueError, match="nothing to average"):
        average_state_dicts([])


def test_command_writes_a_strictly_loading_average_with_its_record(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"resolved": tiny_tree()}))
    paths = []
    for seed in (0, 1):
        path = run / "checkpoints" / f"step_{seed:06d}.pt"
        torch.save({"model": random_state(seed)}, path)
        paths.append(str(path))
    out = tmp_path / "soup"
    assert jobs_main(["average-checkpoints", *paths, "--output", str(out)]) == 0
    averaged = read_state_dict(read_bytes(str(out / "model.pt")))
    a, b = random_state(0), random_state(1)
    assert all(
        torch.allclose(averaged[k], (a[k] + b[k]) / 2) for k in a if a[k].is_floating_point()
    )
    build_for_training(str(out / "config.json"), str(out / "model.pt"))
    record = json.loads((out / "config.json").read_text())["training"]
    assert [r["sha256"] for r in record["averaged"]] == [sha256_file(p) for p in paths]

    assert jobs_main(["average-checkpoints", paths[0], "--output", str(tmp_path / "one")]) == 1
    assert "at least two" in capsys.readouterr().err
    other = tmp_path / "other.pt"
    small = {k: v for k, v in random_state(0).items() if not k.startswith("memory_encoder.")}
    torch.save({"model": small}, other)
    assert (
        jobs_main(["average-checkpoints", paths[0], str(other), "--output", str(tmp_path / "bad")])
        == 1
    )
    err = capsys.readouterr().err
    assert "average-checkpoints:" in err and "only in" in err and str(other) in err
    assert not (tmp_path / "bad" / "model.pt").exists()


def _float_tensor_name(state: dict[str, torch.Tensor]) -> str:
    return next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 10)


def test_nan_or_infinite_weights_are_refused_naming_checkpoint_and_tensor(tmp_path, capsys):
    a, b = random_state(0), random_state(1)
    name = _float_tensor_name(b)
    for bad_value in (float("nan"), float("inf")):
        poisoned = dict(b, **{name: b[name].clone()})
        poisoned[name].view(-1)[3] = bad_value
        with pytest.raises(
            CheckpointError, match=f"second.pt holds NaN or infinite values in {name}"
        ):
            average_state_dicts([a, poisoned], ["first.pt", "second.pt"])

    # Finite inputs whose mean overflows the first checkpoint's dtype (float16) are refused too.
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in a.items()}
    huge = dict(b, **{name: torch.full_like(b[name], 1e6)})
    with pytest.raises(
        CheckpointError, match=f"the average of {name} is not finite in torch.float16"
    ):
        average_state_dicts([half, huge])
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"resolved": tiny_tree()}))
    paths = [str(run / "a.pt"), str(run / "b.pt")]
    torch.save({"model": a}, paths[0])
    poisoned = dict(b, **{name: torch.full_like(b[name], float("nan"))})
    torch.save({"model": poisoned}, paths[1])
    out = tmp_path / "soup"
    assert jobs_main(["average-checkpoints", *paths, "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert paths[1] in err and name in err and "NaN" in err
    assert not (out / "model.pt").exists()


def test_integer_tensors_must_be_equal_and_not_mixed_with_floats():
    a, b = random_state(0), random_state(1)
    name = _float_tensor_name(a)
    counter = {"steps": torch.tensor([3, 4])}
    same = average_state_dicts([{**a, **counter}, {**b, **counter}])
    assert torch.equal(same["steps"], counter["steps"]) and same["steps"].dtype == torch.int64
    with pytest.raises(CheckpointError, match="steps is not a float tensor .* must be equal"):
        average_state_dicts(
            [{**a, **counter}, {**b, "steps": torch.tensor([3, 5])}], ["first.pt", "second.pt"]
        )
    as_int = dict(b, **{name: b[name].round().to(torch.int32)})
    with pytest.raises(CheckpointError, match=f"differ in dtype kind.*{name}"):
        average_state_dicts([a, as_int], ["first.pt", "second.pt"])
