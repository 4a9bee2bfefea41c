"""Training: the loss falls, gradients reach the memory path, checkpoints load strictly,
resuming continues exactly, frozen parameters stay fixed, the CLI runs.

A tiny model (64 x 64 input) on tiny synthetic clips keeps the whole file to a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import tiny_tree

import sam2_core
from jobs.__main__ import main as jobs_main
from sam2_core.checkpoint import read_state_dict
from sam2_core.hub import read_bytes
from sam2_core.synthetic import SyntheticConfig
from sam2_core.training import (
    CONFIG_FILE,
    MODEL_FILE,
    STATE_FILE,
    ClipForward,
    PromptOptions,
    SyntheticClips,
    TrainConfig,
    Trainer,
    build_for_training,
    frozen_names,
    lr_factor,
    make_batch,
)

SYNTH = SyntheticConfig(height=64, width=64, num_frames=8, min_objects=1, max_objects=2)
FIXED_PROMPTS = PromptOptions(
    box_prob=0.0, mask_prob=0.0, exact_click_prob=1.0, max_corrections=0, correct_later_prob=0.0
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_trainer(tmp_path, steps=4, freeze=(), prompts=FIXED_PROMPTS, lr=3e-3, seed=0) -> Trainer:
    torch.manual_seed(seed)
    model, tree = build_for_training(tiny_tree())
    source = SyntheticClips(SYNTH, first_seed=1000, reuse=1.0)
    cfg = TrainConfig(
        steps=steps,
        batch_size=2,
        clip_len=3,
        lr=lr,
        warmup_steps=1,
        checkpoint_every=2,
        log_every=1,
        freeze=tuple(freeze),
        seed=seed,
        prompts=prompts,
    )
    return Trainer(model, tree, source, tmp_path / "run", cfg)


def fixed_batch(image_size: int = 64):
    rng = np.random.default_rng(5)
    source = SyntheticClips(SYNTH, first_seed=1000, reuse=1.0, reverse_prob=0.0)
    return make_batch([source.sample(rng, 3) for _ in range(2)], image_size)


def test_loss_falls_when_overfitting_a_batch(tmp_path):
    trainer = make_trainer(tmp_path, steps=30)
    batch = fixed_batch()
    losses = [trainer.train_step(batch).loss for _ in range(24)]
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert np.isfinite(losses).all()
    assert last < 0.6 * first, (first, last, losses)


def test_gradients_reach_the_memory_path(tmp_path):
    model, _ = build_for_training(tiny_tree())
    model.train()
    with torch.no_grad():  # objects judged present, so their pointers are not gated to "no object"
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(5.0)
    batch = fixed_batch()
    steps = ClipForward(model, FIXED_PROMPTS)(batch, np.random.default_rng(0))
    assert [s.frame for s in steps] == [0, 1, 2]
    loss = sum(s.multimasks.sigmoid().mean() + s.object_logits.mean() for s in steps)
    loss.backward()
    for prefix in (
        "memory_attention.",
        "memory_encoder.",
        "obj_ptr_proj.",
        "maskmem_tpos_enc",
        "image_encoder.",
        "sam_mask_decoder.",
    ):
        grads = [
            p.grad
            for n, p in model.named_parameters()
            if n.startswith(prefix) and p.grad is not None
        ]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads), prefix


def test_frame_losses_only_use_best_mask():
    from sam2_core.training.losses import LossWeights, step_losses

    target = torch.zeros(1, 8, 8)
    target[0, 2:6, 2:6] = 1
    good = target[:, None] * 20 - 10
    bad = -good
    masks = torch.cat([bad, good, bad], dim=1)  # 1 x 3 x 8 x 8
    terms = step_losses(
        masks, torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[5.0]]), target, LossWeights()
    )
    assert float(terms["mask"]) < 1e-3 and float(terms["dice"]) < 0.05
    # IoU head is trained on every candidate: the two wrong ones claim 0 and really have 0
    assert float(terms["iou"]) < 1e-6
    absent = step_losses(
        masks, torch.zeros(1, 3), torch.tensor([[5.0]]), torch.zeros(1, 8, 8), LossWeights()
    )
    assert float(absent["mask"]) == 0.0 and float(absent["object_score"]) > 4.0


def test_checkpoint_loads_strictly_and_resume_is_exact(tmp_path):
    trainer = make_trainer(tmp_path, steps=4)
    for _ in range(2):
        trainer.train_step()
    trainer.save()
    out = tmp_path / "run"
    doc = json.loads((out / CONFIG_FILE).read_text())
    assert "resolved" in doc and doc["training"]["step"] == 2
    loaded = sam2_core.build_model(str(out / CONFIG_FILE), str(out / MODEL_FILE))
    state = read_state_dict(read_bytes(str(out / MODEL_FILE)))
    assert set(state) == set(loaded.state_dict())
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k

    trainer.train_step()  # the run goes on: step 3
    expected = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    model, tree = build_for_training(str(out / CONFIG_FILE))
    resumed = Trainer(
        model, tree, SyntheticClips(SYNTH, first_seed=1000, reuse=1.0), out, trainer.config
    )
    resumed.resume()
    assert resumed.step == 2
    saved = torch.load(out / STATE_FILE, weights_only=True)["optimizer"]["state"]
    now = resumed.optimizer.state_dict()["state"]
    assert saved.keys() == now.keys() and len(now) > 0
    for i in now:
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(now[i][key], saved[i][key])
    assert resumed.scheduler.last_epoch == 2
    resumed.train_step()
    assert resumed.step == 3
    for k, v in resumed.model.state_dict().items():
        assert torch.allclose(v, expected[k], atol=1e-6, rtol=0), k


def test_resume_restores_the_cuda_random_state_too(tmp_path, monkeypatch):
    """CUDA's generators are saved beside the CPU's and set again on resume (emulated: no GPU)."""
    trainer = make_trainer(tmp_path, steps=4)
    trainer.train_step()
    saved_states = [torch.arange(16, dtype=torch.uint8), torch.arange(16, 32, dtype=torch.uint8)]
    restored = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: saved_states)
    monkeypatch.setattr(
        torch.cuda,
        "set_rng_state",
        lambda state, device: restored.__setitem__(device, state.clone()),
    )
    trainer.save()
    out = tmp_path / "run"
    assert [
        torch.equal(a, b)
        for a, b in zip(torch.load(out / STATE_FILE, weights_only=True)["cuda_rng"], saved_states)
    ] == [True, True]
    model, tree = build_for_training(str(out / CONFIG_FILE))
    Trainer(
        model, tree, SyntheticClips(SYNTH, first_seed=1000, reuse=1.0), out, trainer.config
    ).resume()
    assert sorted(restored) == [0, 1]
    assert all(torch.equal(restored[i], saved_states[i]) for i in (0, 1))


def test_a_step_uploads_the_ground_truth_masks_once(tmp_path, monkeypatch):
    from sam2_core.training.clips import ClipBatch

    trainer = make_trainer(tmp_path, steps=4)
    batch = fixed_batch()
    moves = []
    original = ClipBatch.to

    def counted(self, device):
        moves.append(device)
        return original(self, device)

    monkeypatch.setattr(ClipBatch, "to", counted)
    mask_moves = []
    masks_to = torch.Tensor.to

    class Watch(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if (
                func is masks_to
                and args
                and args[0].dtype == batch.masks.dtype
                and args[0].dim() == 3
            ):
                mask_moves.append(tuple(args[0].shape))
            return func(*args, **(kwargs or {}))

    with Watch():
        trainer.train_step(batch)
    assert len(moves) == 1
    assert mask_moves == []  # no per-frame re-upload of a frame's targets (N x S x S)


class _Payload:
    """Unpickling this runs ``marker.touch()``: what a crafted train_state.pt could do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_refuses_a_train_state_holding_code_and_never_runs_it(tmp_path, capsys):
    trainer = make_trainer(tmp_path, steps=4)
    trainer.train_step()
    trainer.save()
    out = tmp_path / "run"
    marker = tmp_path / "payload-ran"
    state = torch.load(out / STATE_FILE, weights_only=True)
    torch.save({**state, "rng": _Payload(marker)}, out / STATE_FILE)

    model, tree = build_for_training(str(out / CONFIG_FILE))
    resumed = Trainer(
        model, tree, SyntheticClips(SYNTH, first_seed=1000, reuse=1.0), out, trainer.config
    )
    with pytest.raises(ValueError, match="holds Python objects other than tensors") as err:
        resumed.resume()
    assert str(out / STATE_FILE) in str(err.value) and "weights_only=False" not in str(err.value)
    assert not marker.exists()

    common = ["--output", str(out), "--steps", "2", "--batch-size", "1", "--clip-len", "2"]
    assert jobs_main(["train", "--resume", *common]) == 1
    message = capsys.readouterr().err
    assert "refusing to load" in message and "Traceback" not in message
    assert not marker.exists()


def test_freezing_keeps_parameters_fixed(tmp_path):
    trainer = make_trainer(tmp_path, steps=3, freeze=("image_encoder", "sam_prompt_encoder."))
    frozen = set(trainer.frozen)
    assert frozen and all(n.startswith(("image_encoder.", "sam_prompt_encoder.")) for n in frozen)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    batch = fixed_batch()
    for _ in range(2):
        trainer.train_step(batch)
    changed = {n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])}
    assert not changed & frozen
    assert any(n.startswith("sam_mask_decoder.") for n in changed)
    with pytest.raises(ValueError, match="matches no parameter"):
        frozen_names(trainer.model, ("no_such_module",))


def test_learning_rate_warms_up_then_decays():
    assert lr_factor(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, 0.1) == pytest.approx(0.55)
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)
    cfg = TrainConfig(clip_len=8, clip_len_schedule=((0, 3), (50, 5)))
    assert [cfg.clip_len_at(s) for s in (0, 49, 50, 500)] == [3, 3, 5, 5]


def test_cli_trains_and_resumes(tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"resolved": tiny_tree()}))
    out = tmp_path / "cli"
    common = [
        "--output",
        str(out),
        "--batch-size",
        "1",
        "--clip-len",
        "2",
        "--height",
        "64",
        "--width",
        "64",
        "--frames",
        "6",
        "--max-objects",
        "1",
        "--checkpoint-every",
        "1",
        "--log-every",
        "1",
    ]
    assert jobs_main(["train", "--config", str(config), "--steps", "1", *common]) == 0
    assert (
        jobs_main(["train", "--resume", "--steps", "2", "--freeze", "image_encoder", *common]) == 1
    )  # frozen set differs
    assert jobs_main(["train", "--resume", "--steps", "2", *common]) == 0
    text = capsys.readouterr()
    assert "resumed at step 1" in text.out and "step 2/2" in text.out and "clips/s" in text.out
    assert json.loads((out / CONFIG_FILE).read_text())["training"]["step"] == 2
    sam2_core.build_model(str(out / CONFIG_FILE), str(out / MODEL_FILE))
    assert jobs_main(["train", "--output", str(tmp_path / "x")]) == 1  # no --config
    assert "required unless --resume" in capsys.readouterr().err


def test_embedding_penalty_only_above_unit_mean_square():
    from sam2_core.training.losses import LossWeights, embedding_penalty, total_loss

    assert float(embedding_penalty(torch.full((2, 4, 3, 3), 0.5))) == 0.0
    assert float(embedding_penalty(torch.full((2, 4, 3, 3), 3.0))) == pytest.approx(8.0)
    terms = {k: torch.tensor(0.0) for k in ("mask", "dice", "iou", "object_score")}
    terms["embedding"] = torch.tensor(2.0)
    assert float(total_loss(terms, LossWeights())) == 0.0  # off by default (SAM 2's losses only)
    assert float(total_loss(terms, LossWeights(embedding_rms=0.5))) == pytest.approx(1.0)


def test_prompt_attention_alignment_ties_keys_to_queries():
    from sam2_core.training.trainer import align_prompt_attention

    model, _ = build_for_training(tiny_tree())
    assert (
        align_prompt_attention(model, sharpness=4.0) == 5
    )  # 2 blocks x 2 cross-attentions + final
    attn = model.sam_mask_decoder.transformer.final_attn_token_to_image
    assert torch.equal(attn.k_proj.weight, 4.0 * attn.q_proj.weight)
    assert float(attn.k_proj.bias.detach().abs().sum()) == 0.0
    self_attn = model.sam_mask_decoder.transformer.layers[0].self_attn
    assert not torch.equal(
        self_attn.k_proj.weight, self_attn.q_proj.weight
    )  # self-attention untouched


def test_memory_attention_alignment_makes_attention_local():
    from sam2_core.modeling.transformer import rotate
    from sam2_core.training.trainer import align_memory_attention

    model, _ = build_for_training(tiny_tree())
    assert align_memory_attention(model, strength=5.0, pairs=3) == 1
    attn = model.memory_attention.layers[0].cross_attn_image
    assert (
        torch.equal(attn.q_proj.bias, attn.k_proj.bias) and int((attn.q_proj.bias != 0).sum()) == 6
    )
    # With content-free inputs only the biases remain: each query position attends most to the same key position.
    side = 4
    with torch.no_grad():
        zeros_q = torch.zeros(1, side * side, attn.embedding_dim)
        zeros_k = torch.zeros(1, side * side, attn.kv_in_dim)
        q, k = attn._heads(attn.q_proj(zeros_q)), attn._heads(attn.k_proj(zeros_k))
        freqs = attn._frequencies(side * side, q.device)
        logits = rotate(q, freqs) @ rotate(k, freqs).transpose(-1, -2)
    assert torch.equal(logits[0, 0].argmax(dim=-1), torch.arange(side * side))
