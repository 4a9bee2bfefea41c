"""The tracker's typed records: how a session runs (:class:`TrackerOptions`), how it ran
(:class:`TrackerStats`), each object's prompts (:class:`ObjectTrack`) and each frame's outputs
(:class:`FrameResult` on the device, :class:`FrameMasks` on the host); and the default number
of objects advanced together (:func:`automatic_object_chunk`).

Re-exported by :mod:`sam2_core.tracker`, where :class:`~sam2_core.tracker.VideoSession` uses them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import transfer
from .memory_bank import FrameState
from .modeling.sam2 import SAM2Model
from .prompts import ObjectPrompt
from .transfer import to_host
from .transforms import FRAME_RESIZES


@dataclass(frozen=True)
class TrackerOptions:
    """How a session stores its state and runs the model.

    storage_device: where per-frame memories live (None: the model's device; "cpu" offloads,
    as the official ``offload_state_to_cpu``). memory_dtype: dtype of stored memory features
    (float32 for parity; bfloat16 halves state). batch_objects: advance all objects of a frame
    in one batch (False: one object at a time, for comparison). feature_cache_size: frames whose
    image features are kept. autocast_dtype: e.g. torch.bfloat16 to run under autocast on CUDA.
    prefetch_frames: how many frames ahead of a propagation a background thread reads and
    preprocesses (0: none; None: 2 when the model is on a GPU, 0 on a CPU, where the thread
    competes with torch's own threads for the cores and roughly halves the speed, see
    docs/PERFORMANCE.md). object_chunk: at most this many objects go through memory
    attention, the mask decoder and the memory encoder together (None: automatic, every object
    on the CPU, on CUDA as many as about half the free device memory holds; see
    :func:`automatic_object_chunk`); a frame that runs out of device memory is redone with
    half the chunk. stable_shapes: pad each chunk's objects to a power of two (at most the
    chunk) and every memory to a fixed token count, so that compiled parts see few shapes
    (None: when the model's hot parts are compiled, ``SAM2Model.compile_hot_parts``).
    frame_resize: how frames are resized to the model's input: "pillow" (default; the official
    loader's resize, bit-identical input, about 2 ms a 480x640 frame) or "torch" (torch's
    antialiased bicubic on the uint8 frame: about 0.4 ms, every value within one grey level of
    Pillow's, but the long parity case then leaves its 1e-2 logit tolerance); see
    ``transforms.video_frame_to_input`` and docs/PERFORMANCE.md.
    encode_ahead: encode frame t+1 on a second single-threaded lane while frame t is tracked on
    one thread (None: automatic, on a CPU where torch runs two threads, for at most two objects,
    in float32 with the model's own encoder; True / False force it on or off, except for a
    model in training mode; see :mod:`sam2_core.encode_ahead`).
    """

    storage_device: str | None = None
    memory_dtype: torch.dtype = torch.float32
    batch_objects: bool = True
    feature_cache_size: int = 2
    autocast_dtype: torch.dtype | None = None
    prefetch_frames: int | None = None
    object_chunk: int | None = None
    stable_shapes: bool | None = None
    frame_resize: str = "pillow"
    encode_ahead: bool | None = None

    def __post_init__(self):
        if self.frame_resize not in FRAME_RESIZES:
            raise ValueError(
                f"frame_resize must be one of {FRAME_RESIZES}, got {self.frame_resize!r}"
            )
        if self.object_chunk is not None and self.object_chunk < 1:
            raise ValueError(
                f"object_chunk must be >= 1 (or None for automatic), got {self.object_chunk}"
            )


@dataclass
class TrackerStats:
    """How a session ran, for reports (summary.json): object_chunk: the chunk size in use
    (None until the first tracked frame); max_chunks_per_frame: the most chunks one frame was
    split into; oom_retries: frames redone with a smaller chunk after running out of device
    memory; largest_chunk / smallest_chunk: the largest and smallest chunk a frame was tried
    with (0 before the first); oom_chunks: the smaller chunk each of those retries took, in order;
    frames_encoded_ahead: frames whose image features came from the encode-ahead lane.
    """

    object_chunk: int | None = None
    max_chunks_per_frame: int = 0
    oom_retries: int = 0
    largest_chunk: int = 0
    smallest_chunk: int = 0
    oom_chunks: list[int] = field(default_factory=list)
    frames_encoded_ahead: int = 0

    def record_frame(self, chunk: int, chunks: int) -> None:
        """A frame tried with objects in ``chunks`` chunks of at most ``chunk``."""
        self.max_chunks_per_frame = max(self.max_chunks_per_frame, chunks)
        self.largest_chunk = max(self.largest_chunk, chunk)
        self.smallest_chunk = min(self.smallest_chunk or chunk, chunk)


@dataclass
class ObjectTrack:
    """One object's prompts, one per frame (its memory is in the session's MemoryBank).
    ``pending`` holds outputs of prompts added since the last propagation, as (conditioning,
    state) with the memory not encoded yet; ``tracked`` maps each frame the object has been
    tracked on to the direction it was tracked in (True = reverse)."""

    object_id: int
    prompts: dict[int, ObjectPrompt] = field(default_factory=dict)
    pending: dict[int, tuple[bool, FrameState]] = field(default_factory=dict)
    tracked: dict[int, bool] = field(default_factory=dict)

    def prompted_frames(self) -> set[int]:
        return set(self.prompts)


@dataclass
class FrameMasks:
    """One frame's outputs on the host, as :meth:`FrameResult.download` returns them.

    masks: N x H x W bool at the video's resolution (logit > 0); present: N bool (object
    score > 0); object_score_logits: N float32; ious: N float32 predicted IoU.
    """

    frame_index: int
    object_ids: list[int]
    masks: np.ndarray
    present: np.ndarray
    object_score_logits: np.ndarray
    ious: np.ndarray
    prompted: list[bool]


@dataclass
class FrameResult:
    """All objects' outputs on one frame, left on the model's device.

    low_res: N x 1 x h4 x w4 float32 logits at the model's mask resolution;
    object_score_logits: N (> 0: present); ious: N predicted IoU of the returned masks;
    prompted: N, whether the frame has prompts for that object; video_size: (H, W).
    :meth:`download` brings thresholded masks and the scores to the host in one copy (the
    pipeline's path); :attr:`mask_logits` gives float logits at video size (for parity and
    debugging: a large copy).
    """

    frame_index: int
    object_ids: list[int]
    low_res: torch.Tensor
    object_score_logits: torch.Tensor
    ious: torch.Tensor
    prompted: list[bool]
    video_size: tuple[int, int]

    def video_logits(self) -> torch.Tensor:
        """N x H x W float32 logits at the video's resolution, on the device (> 0 inside;
        -1024 where absent).

        On the CPU, where looking at the values costs no wait for a device, an object whose
        low-res logits are one constant (an absent object: -1024 everywhere) is filled with
        that constant instead of being upsampled; only the others go through the upsampling.
        """
        low = self.low_res
        n = low.shape[0]
        if transfer.values_free_to_read(low.device) and n:
            flat = low.reshape(n, -1)
            lo = flat.amin(dim=1)
            varying = (lo != flat.amax(dim=1)).nonzero()[:, 0]
            if len(varying) < n:
                out = lo.reshape(n, 1, 1).expand(n, *self.video_size).clone()
                if len(varying):
                    out[varying] = _upsample(low[varying], self.video_size)
                return out
        return _upsample(low, self.video_size)

    @functools.cached_property
    def mask_logits(self) -> torch.Tensor:
        """N x H x W float32 logits at the video's resolution, on the host (computed once)."""
        return to_host(self.video_logits())

    def download(self) -> FrameMasks:
        """Thresholded masks and per-object scalars on the host, in one copy and one wait:
        1 byte per pixel instead of 4, and no copy per object."""
        n = len(self.object_ids)
        h, w = self.video_size
        masks = self.video_logits() > 0
        scalars = torch.stack(
            [self.object_score_logits.float(), self.ious.float()], dim=1
        ).contiguous()
        packed = torch.cat(
            [scalars.reshape(-1).view(torch.uint8), masks.reshape(-1).view(torch.uint8)]
        )
        host = to_host(packed).numpy()
        values = host[: n * 8].view(np.float32).reshape(n, 2)
        return FrameMasks(
            self.frame_index,
            list(self.object_ids),
            host[n * 8 :].view(np.bool_).reshape(n, h, w),
            values[:, 0] > 0,
            values[:, 0],
            values[:, 1],
            list(self.prompted),
        )


def _upsample(low_res: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """N x 1 x h4 x w4 logits -> N x H x W (bilinear, as the official predictor)."""
    return F.interpolate(low_res, size=size, mode="bilinear", align_corners=False)[:, 0]


def automatic_object_chunk(
    model: SAM2Model, device: torch.device, num_objects: int, share: float = 0.5
) -> int:
    """How many objects to advance together: all of them on the CPU; on CUDA as many as
    ``share`` of the free device memory holds, by an estimate of one object's working memory
    in memory attention (its memory tokens, the attention scores if the math kernel runs, the
    feed-forward activations) and in the decoder and memory encoder (masks at input size).
    ``num_objects``: the session's objects (the chunk is never larger)."""
    if device.type != "cuda":
        return max(num_objects, 1)
    free, _ = torch.cuda.mem_get_info(device)
    cfg = model.cfg
    hw = cfg.feat_size**2
    mem_tokens = cfg.tracking.num_maskmem * hw + cfg.tracking.max_obj_ptrs_in_encoder * max(
        cfg.hidden_dim // cfg.mem_dim, 1
    )
    att = cfg.memory_attention
    per_object = 4 * (
        hw * mem_tokens * att.num_heads  # attention scores (math kernel)
        + hw * (att.dim_feedforward + 6 * att.d_model)  # activations of a layer
        + 2 * mem_tokens * cfg.mem_dim  # tokens and their encodings
        + 4 * model.image_size**2  # high-res masks, memory encoder input
    )
    return max(1, min(max(num_objects, 1), int(share * free // (2 * per_object))))
