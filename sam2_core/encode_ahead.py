"""Encoding the next frame on a second thread while the current one is tracked.

On a two-core CPU, torch's two intra-op threads share a small model's many small kernels
poorly (one object: about 1.3x faster on two threads than on one). With few objects the image
encoder is a large share of a frame and does not depend on the tracking state, so two
single-threaded lanes do better: one encodes frame t+1 while the other tracks frame t (with
several objects the tracking lane widens back to two threads after memory attention). The
encoder runs as a TorchScript trace of ``SAM2Model.encode_image``, whose graph executes without
holding Python's GIL; run eagerly, the two lanes would slow each other down by about a fifth
waiting for it. The trace runs the same operators as the eager encoder (same outputs).
"""

from __future__ import annotations

import threading
import warnings
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait

import torch
from torch import nn

from .modeling.sam2 import ImageFeatures, SAM2Model

# Measured on a two-core CPU (docs/PERFORMANCE.md): encoding ahead pays for up to this many
# objects (with 16 the encoder is too small a share of a frame); up to NARROW_MAX_OBJECTS the
# tracking lane stays at one thread while the lane encodes, with more it takes its second
# thread back after memory attention.
ENCODE_AHEAD_MAX_OBJECTS = 6
NARROW_MAX_OBJECTS = 3


def encode_ahead_wanted(
    option: bool | None,
    device: torch.device,
    num_objects: int,
    custom_encoder: bool,
    autocast: bool,
    training: bool = False,
    compiled: bool = False,
) -> bool:
    """Whether a propagation encodes frames ahead: never for a model in training mode (its
    random draws would interleave across threads); else ``option`` if set (the lane then runs
    the session's own encoder, eagerly, where the trace does not apply: a custom encoder or
    autocast), else only on a CPU where torch runs two threads, for at most
    ENCODE_AHEAD_MAX_OBJECTS objects, in float32 (no autocast), with the model's own encoder
    (not a SharedEncoder batching several videos), without compiled parts (the compiler
    already fuses them; traces and module hooks do not mix with it): where it pays."""
    if training:
        return False
    if option is not None:
        return bool(option)
    return (
        device.type == "cpu"
        and torch.get_num_threads() == 2
        and 0 < num_objects <= ENCODE_AHEAD_MAX_OBJECTS
        and not custom_encoder
        and not autocast
        and not compiled
    )


def widen_at(model: SAM2Model, num_objects: int) -> list[nn.Module]:
    """Where the tracking lane takes its second thread back (see :class:`EncoderLane`): the
    parts a frame runs after memory attention (the prompt encoder, the mask decoder and the
    memory encoder), for more than NARROW_MAX_OBJECTS objects; none for fewer."""
    if num_objects <= NARROW_MAX_OBJECTS:
        return []
    return [model.sam_prompt_encoder, model.sam_mask_decoder, model.memory_encoder]


class _EncodeImage(torch.nn.Module):
    """encode_image with plain tensor outputs, as a trace needs."""

    def __init__(self, model: SAM2Model):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        feats = self.model.encode_image(images)
        return feats.levels, feats.pos


# Traces per model, kept beside the model rather than on it: a model stays picklable and a
# copy of it traces its own weights.
_TRACES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def traced_encoder(model: SAM2Model) -> Callable[[torch.Tensor], ImageFeatures]:
    """``model.encode_image`` for 1 x 3 x S x S images as a TorchScript trace of the model in
    eval mode (the caller's to ensure), made once per model, device and dtype (the trace shares
    the model's parameters, so in-place weight updates reach it). Falls back to the eager
    encoder where the model cannot be traced."""
    param = next(model.parameters())
    key = (param.device, param.dtype, model.image_size)
    cache = _TRACES.setdefault(model, {})
    if key not in cache:
        example = torch.zeros(1, 3, model.image_size, model.image_size, device=param.device)
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                graph = torch.jit.trace(_EncodeImage(model), example, check_trace=False)
        except Exception:  # noqa: BLE001 - any tracing failure: the eager encoder still works
            cache[key] = model.encode_image
        else:

            def encode(images: torch.Tensor) -> ImageFeatures:
                levels, pos = graph(images)
                return ImageFeatures(list(levels), list(pos))

            cache[key] = encode
    return cache[key]


class EncoderLane:
    """A second single-threaded lane that encodes frames ahead of the tracking thread.

    ``encode(frame)`` runs on the lane (reading and preprocessing included). While the lane
    encodes, the calling thread runs torch with one thread too; :meth:`close` restores its count.
    With ``widen`` modules, the calling thread takes its threads back when it first calls one of
    them after each :meth:`start` (a frame's memory attention runs on one thread, about as long
    as the lane's encoding; what follows on two). That pays with several objects, whose batched
    tracking kernels use two threads well; with one or two the calling thread stays at one.
    The switch point is a module, not the moment the lane finishes, so that every operation
    runs on the same number of threads from one run to the next: the outputs are reproducible.
    """

    def __init__(self, encode: Callable[[int], ImageFeatures], widen: Iterable[nn.Module] = ()):
        self._encode = encode
        self._pending: dict[int, Future] = {}
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)
        self._narrow = True
        self._owner = threading.get_ident()
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="encode-ahead", initializer=self._one_thread
        )
        self._hooks = [m.register_forward_pre_hook(self._widen) for m in widen]
        self.frames_encoded = 0

    def _widen(self, *_) -> None:
        if self._narrow and threading.get_ident() == self._owner:
            wait(self._pending.values())  # never three threads on two cores
            torch.set_num_threads(self._threads)
            self._narrow = False

    @staticmethod
    def _one_thread() -> None:
        torch.set_num_threads(1)

    def _run(self, frame: int) -> ImageFeatures:
        with torch.inference_mode():
            return self._encode(frame)

    def start(self, frame: int) -> None:
        """Begin encoding ``frame`` on the lane (once)."""
        if frame not in self._pending:
            if not self._narrow:
                torch.set_num_threads(1)
                self._narrow = True
            self._pending[frame] = self._pool.submit(self._run, frame)

    def take(self, frame: int) -> ImageFeatures | None:
        """``frame``'s features if the lane was asked for them (waits for them), else None."""
        future = self._pending.pop(frame, None)
        if future is None:
            return None
        feats = future.result()
        self.frames_encoded += 1
        return feats

    def close(self) -> None:
        """Drop what is pending, stop the lane and give the calling thread its threads back."""
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)
        for hook in self._hooks:
            hook.remove()
        torch.set_num_threads(self._threads)
