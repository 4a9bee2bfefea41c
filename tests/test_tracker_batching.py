"""What a tracked frame costs does not grow in small steps with the number of objects: memory
tokens are assembled in a fixed number of tensor operations, prompts of many objects on a frame
are decoded and encoded as one batch, and per-image constants are kept between frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from sam2_core import transfer
from sam2_core.frames import ArrayFrames
from sam2_core.tracker import FrameResult, ObjectPrompt, VideoSession, track_session


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.fixture(scope="module")
def frames(mini_a_dir):
    return np.load(mini_a_dir / "long_case.npz")["frames"][:8]


def _clicks(n: int, frame: int = 0) -> list[ObjectPrompt]:
    return [
        ObjectPrompt(k + 1, frame, points=[[20.0 + 10 * k, 30.0 + 5 * k]], labels=[1])
        for k in range(n)
    ]


def _session_after(mini, frames, prompts, upto: int) -> VideoSession:
    session = VideoSession(mini, ArrayFrames(frames))
    for prompt in prompts:
        session.add(prompt)
    for res in session.propagate(0):
        if res.frame_index == upto:
            break
    return session


@torch.inference_mode()
def test_memory_tokens_take_as_many_tensor_operations_for_eight_objects_as_for_two(mini, frames):
    counts = {}
    for n in (2, 8):
        session = _session_after(mini, frames, _clicks(n), upto=4)
        feats = session._frame_features(5)
        ids = session.object_ids
        with _CountOps() as ops:
            session._bank.tokens(ids, 5, feats, reverse=False)
        counts[n] = ops.count
    assert counts[8] == counts[2], counts


@torch.inference_mode()
def test_batched_memory_tokens_are_each_objects_own(mini, frames):
    # Objects 1-2 prompted on frame 0, object 3 on frame 2: ragged memories, padded and masked.
    prompts = [*_clicks(2), ObjectPrompt(3, 2, points=[[60.0, 40.0]], labels=[1])]
    session = _session_after(mini, frames, prompts, upto=5)
    feats = session._frame_features(6)
    bank = session._bank
    for ids in ([1, 2], [1, 2, 3]):
        batch = bank.tokens(ids, 6, feats, reverse=False)
        for i, oid in enumerate(ids):
            alone = bank.tokens([oid], 6, feats, reverse=False)
            keep = slice(None) if batch.key_mask is None else batch.key_mask[i]
            pos = batch.pos[i if batch.pos.shape[0] > 1 else 0]
            n_sp = alone.tokens.shape[1] - alone.num_pointer_tokens
            torch.testing.assert_close(batch.tokens[i][keep][:n_sp], alone.tokens[0][:n_sp])
            torch.testing.assert_close(pos[keep][:n_sp], alone.pos[0][:n_sp])
            torch.testing.assert_close(
                batch.tokens[i][keep][n_sp:], alone.tokens[0][n_sp:], rtol=1e-5, atol=1e-6
            )
            torch.testing.assert_close(pos[keep][n_sp:], alone.pos[0][n_sp:], rtol=1e-5, atol=1e-6)
    assert bank.tokens([1, 2], 6, feats, reverse=False).pos.shape[0] == 1  # alike: shared


def _calls(module: torch.nn.Module, arg: int) -> list[int]:
    """The batch size of argument ``arg`` in each call of ``module`` from now on."""
    calls: list[int] = []
    module.register_forward_hook(lambda m, args, out: calls.append(args[arg].shape[0]))
    return calls


def test_prompts_on_a_frame_are_decoded_and_encoded_as_one_batch(mini, frames):
    prompts = _clicks(4)
    decoder = _calls(mini.sam_mask_decoder, 0)
    encoder = _calls(mini.memory_encoder, 1)  # the masks (the frame's features: batch 1)
    try:
        batched = [
            r.mask_logits
            for r in track_session(VideoSession(mini, ArrayFrames(frames[:3])), prompts)
        ]
        prompting_decodes, prompting_encodes = decoder[:1], encoder[:1]
        session = VideoSession(mini, ArrayFrames(frames[:3]))
        for prompt in prompts:
            session.add(prompt)
        alone = [r.mask_logits for r in session.propagate(0)]
    finally:
        mini.sam_mask_decoder._forward_hooks.clear()
        mini.memory_encoder._forward_hooks.clear()
    assert prompting_decodes == [4] and prompting_encodes == [4]
    for a, b in zip(batched, alone, strict=True):
        assert float((a - b).abs().max()) < 1e-3


def test_image_position_embedding_is_computed_once_while_the_weights_stay(mini, frames):
    trunk = mini.image_encoder.trunk
    image = torch.zeros(1, 3, mini.image_size, mini.image_size)
    with torch.inference_mode():
        first = trunk._pos_embed(64, 64)
        assert trunk._pos_embed(64, 64) is first
    saved = trunk.pos_embed.detach().clone()
    with torch.no_grad():
        trunk.pos_embed.add_(1.0)
        changed = trunk._pos_embed(64, 64)
        trunk.pos_embed.copy_(saved)
    assert changed is not first
    torch.testing.assert_close(changed, first + 1.0)
    # Recording gradients: computed afresh, with its history.
    trunk.pos_embed.grad = None
    trunk(image)[0].sum().backward()
    assert trunk.pos_embed.grad is not None
    trunk.zero_grad(set_to_none=True)


class _Upsampled(TorchDispatchMode):
    """How many images went through bilinear upsampling."""

    def __init__(self):
        super().__init__()
        self.images = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "upsample_bilinear2d" in str(func):
            self.images += args[0].shape[0]
        return func(*args, **(kwargs or {}))


def test_only_objects_with_varying_logits_are_upsampled_to_video_size():
    low = torch.full((3, 1, 16, 16), -1024.0)
    low[1] = torch.linspace(-3, 3, 256).reshape(1, 16, 16)
    result = FrameResult(
        1, [1, 2, 3], low, torch.tensor([-1.0, 2.0, -1.0]), torch.ones(3), [False] * 3, (48, 64)
    )
    with _Upsampled() as up:
        logits = result.video_logits()
    assert up.images == 1
    plain = F.interpolate(low, size=(48, 64), mode="bilinear", align_corners=False)[:, 0]
    assert logits.shape == (3, 48, 64) and logits.dtype == torch.float32
    assert bool((logits[0] == -1024).all()) and bool((logits[2] == -1024).all())
    torch.testing.assert_close(logits, plain)
    masks = result.download().masks
    assert masks.shape == (3, 48, 64) and not masks[0].any() and not masks[2].any()
    np.testing.assert_array_equal(masks[1], (plain[1] > 0).numpy())


def test_decoder_position_encoding_is_computed_once_while_its_matrix_stays(mini):
    encoder = mini.sam_prompt_encoder
    matrix = encoder.pe_layer.positional_encoding_gaussian_matrix
    with torch.inference_mode():
        first = encoder.get_dense_pe()
        assert encoder.get_dense_pe() is first
        torch.testing.assert_close(
            first, encoder.pe_layer.grid(*encoder.image_embedding_size)[None]
        )
    saved = matrix.clone()
    try:
        matrix.mul_(2.0)
        changed = encoder.get_dense_pe()
        torch.testing.assert_close(
            changed, encoder.pe_layer.grid(*encoder.image_embedding_size)[None]
        )
        assert not torch.equal(changed, first)
    finally:
        matrix.copy_(saved)


@torch.inference_mode()
def test_objects_with_the_same_constant_mask_share_one_memory_encoding(mini, monkeypatch):
    torch.manual_seed(0)
    c, h = mini.cfg.hidden_dim, mini.image_size // 16
    embedding = torch.randn(1, c, h, h)
    size = mini.image_size
    absent, full = torch.full((size, size), -1024.0), torch.full((size, size), 50.0)
    masks = torch.stack(
        [torch.randn(size, size) * 8, absent, torch.randn(size, size) * 8, absent, full, full]
    )[:, None]
    scores = torch.tensor([[2.0], [-3.0], [1.0], [-2.0], [4.0], [5.0]])
    batches = []
    hook = mini.memory_encoder.register_forward_pre_hook(
        lambda _, args: batches.append(args[1].shape[0])
    )
    try:
        feats, pos = mini.encode_memory(embedding, masks, scores, False)
        alone = [
            mini.encode_memory(embedding, masks[i : i + 1], scores[i : i + 1], False)
            for i in range(6)
        ]
    finally:
        hook.remove()
    assert batches[0] == 4  # two varying masks, one per distinct constant
    for i, (f, p) in enumerate(alone):
        assert torch.allclose(feats[i : i + 1], f, atol=1e-5, rtol=0), i
        assert torch.equal(pos[i : i + 1], p)
    # absent objects also carry the no-object embedding: theirs differ from the full ones
    assert torch.equal(feats[1], feats[3]) and not torch.allclose(feats[1], feats[4])
    # where reading values would wait for a device, every mask is encoded, unread
    monkeypatch.setattr(transfer, "values_free_to_read", lambda device: False)
    hook = mini.memory_encoder.register_forward_pre_hook(
        lambda _, args: batches.append(args[1].shape[0])
    )
    try:
        again, _ = mini.encode_memory(embedding, masks, scores, False)
    finally:
        hook.remove()
    assert batches[-1] == 6 and torch.allclose(again, feats, atol=1e-5, rtol=0)
