"""The whole SAM 2 network and the batched steps that the image predictor and
the video tracker are made of (encode an image, decode masks from prompts,
condition on memory, encode a new memory).

Every step works on a batch of objects; which memories each object sees is
decided by the tracker (``sam2_core.memory_rule``), not here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .. import transfer
from ..config import ModelConfig
from ..transforms import SAM2_IMAGE_CONVENTION
from .common import MLP, graph_capture, sine_encoding_1d
from .image_encoder import ImageEncoder
from .mask_decoder import MaskDecoder
from .memory import MemoryAttention, MemoryEncoder
from .precision import float32_island
from .prompt_encoder import PAD, PromptEncoder

NO_OBJECT_SCORE = -1024.0
"""Logit written over every pixel of an object judged absent (as the official code does)."""


@dataclass
class ImageFeatures:
    """Features of a batch of images, high resolution first.

    levels[0]: B x C/8 x 4h x 4w and levels[1]: B x C/4 x 2h x 2w (already projected for the
    decoder's skip connections), levels[2]: B x C x h x w; pos: the matching position encodings.
    """

    levels: list[torch.Tensor]
    pos: list[torch.Tensor]

    @property
    def embedding(self) -> torch.Tensor:
        return self.levels[-1]

    @property
    def high_res(self) -> list[torch.Tensor]:
        return self.levels[:-1]

    def take(self, index: int | slice | torch.Tensor) -> ImageFeatures:
        """Select images along the batch axis."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return ImageFeatures([x[index] for x in self.levels], [p[index] for p in self.pos])

    def clone(self) -> ImageFeatures:
        """A copy that owns its memory (not a view of a larger batch)."""
        return ImageFeatures([x.clone() for x in self.levels], [p.clone() for p in self.pos])

    def expand(self, n: int) -> ImageFeatures:
        """Broadcast a single image's features to n objects (a view, no copy)."""
        return ImageFeatures(
            [x.expand(n, -1, -1, -1) for x in self.levels],
            [p.expand(n, -1, -1, -1) for p in self.pos],
        )

    def to(self, device: torch.device | str) -> ImageFeatures:
        return ImageFeatures([x.to(device) for x in self.levels], [p.to(device) for p in self.pos])


@dataclass
class HeadsOutput:
    """What the SAM heads give for a batch of B objects.

    multimasks: B x M x h4 x w4 low-res logits (M = 3 or 1); ious: B x M;
    low_res: B x 1 x h4 x w4 and high_res: B x 1 x S x S logits of the chosen mask;
    iou: B, predicted IoU of the chosen mask; obj_ptr: B x C; object_score_logits: B x 1.
    """

    multimasks: torch.Tensor
    ious: torch.Tensor
    low_res: torch.Tensor
    high_res: torch.Tensor
    iou: torch.Tensor
    obj_ptr: torch.Tensor
    object_score_logits: torch.Tensor

    def first(self, n: int) -> HeadsOutput:
        """The outputs of the first ``n`` objects of the batch."""
        return HeadsOutput(*(getattr(self, f.name)[:n] for f in fields(self)))


class SAM2Model(nn.Module):
    """SAM 2 / SAM 2.1. Submodule and parameter names are those of the official checkpoints."""

    image_convention = SAM2_IMAGE_CONVENTION

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        t = cfg.tracking
        hidden, mem = cfg.hidden_dim, cfg.mem_dim
        self.image_size = cfg.image_size
        self.hot_parts_compiled = False
        self.image_encoder = ImageEncoder(cfg.trunk, cfg.neck)
        self.memory_attention = MemoryAttention(cfg.memory_attention)
        self.memory_encoder = MemoryEncoder(cfg.memory_encoder)
        emb = cfg.feat_size
        self.sam_prompt_encoder = PromptEncoder(
            hidden, (emb, emb), (cfg.image_size, cfg.image_size), mask_in_chans=16
        )
        self.sam_mask_decoder = MaskDecoder(hidden, cfg.decoder)

        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(t.num_maskmem, 1, 1, mem))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, hidden))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, hidden))
        if cfg.decoder.pred_obj_scores and t.use_obj_ptrs_in_encoder:
            self.no_obj_ptr = nn.Parameter(torch.zeros(1, hidden))
        if t.no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, mem))
        if t.use_obj_ptrs_in_encoder:
            # Turns a full-resolution mask prompt into the decoder's low-res mask input.
            self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.obj_ptr_proj = (
            MLP(hidden, hidden, hidden, 3)
            if t.use_mlp_for_obj_ptr_proj
            else nn.Linear(hidden, hidden)
        )
        self.obj_ptr_tpos_proj = (
            nn.Linear(hidden, mem) if t.proj_tpos_enc_in_obj_ptrs else nn.Identity()
        )
        self._init_like_official()

    def _init_like_official(self) -> None:
        for p in (self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc):
            nn.init.trunc_normal_(p, std=0.02)
        if hasattr(self, "no_obj_ptr"):
            nn.init.trunc_normal_(self.no_obj_ptr, std=0.02)
        if hasattr(self, "no_obj_embed_spatial"):
            nn.init.trunc_normal_(self.no_obj_embed_spatial, std=0.02)

    @property
    def device(self) -> torch.device:
        return self.no_mem_embed.device

    def compile_hot_parts(self, **compile_kwargs) -> None:
        """torch.compile the image encoder, memory attention, memory encoder and mask decoder in
        place (parameter names and weights unchanged). Worth it on a GPU for long runs; the first
        calls pay the compilation. Sets ``hot_parts_compiled``, which makes video sessions keep
        their shapes stable (see ``TrackerOptions.stable_shapes``) so that the compiled parts
        are not recompiled for every object count and memory length."""
        self.hot_parts_compiled = True
        for part in (
            self.image_encoder,
            self.memory_attention,
            self.memory_encoder,
            self.sam_mask_decoder,
        ):
            part.compile(**compile_kwargs)

    # ------------------------------------------------------------------ image

    def encode_image(self, images: torch.Tensor) -> ImageFeatures:
        """B x 3 x S x S normalised images -> ImageFeatures (decoder skip projections applied)."""
        out = self.image_encoder(images)
        levels = list(out.backbone_fpn)
        if self.cfg.decoder.use_high_res_features:
            levels[0], levels[1] = self.sam_mask_decoder.project_high_res(levels[0], levels[1])
        return ImageFeatures(levels, list(out.vision_pos_enc))

    def add_no_memory(self, embedding: torch.Tensor) -> torch.Tensor:
        """The embedding of a frame seen without memory (a first conditioning frame, or an image)."""
        return embedding + self.no_mem_embed.reshape(1, -1, 1, 1)

    # ------------------------------------------------------------------ decoding

    def use_multimask(self, init: bool, num_points: int) -> bool:
        """SAM 2's rule for asking the decoder for several candidate masks: on an initial
        conditioning frame (``init``: prompts on a frame the object was not tracked on) or, if
        the config allows, while tracking and correcting, with few enough points."""
        t = self.cfg.tracking
        return (
            t.multimask_output_in_sam
            and (init or t.multimask_output_for_tracking)
            and t.multimask_min_pt_num <= num_points <= t.multimask_max_pt_num
        )

    def sam_heads(
        self,
        pix_feat: torch.Tensor,
        high_res: list[torch.Tensor],
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        mask_inputs: torch.Tensor | None,
        multimask: bool,
    ) -> HeadsOutput:
        """Decode masks for B objects.

        point_coords: B x N x 2 in model-input pixels, point_labels: B x N (None: no points);
        mask_inputs: B x 1 x H x W logits (resized to the decoder's mask size if needed).
        """
        b = pix_feat.shape[0]
        if point_coords is None:
            point_coords = pix_feat.new_zeros(b, 1, 2)
            point_labels = torch.full((b, 1), PAD, dtype=torch.int32, device=pix_feat.device)
        mask_prompt = None
        if mask_inputs is not None:
            size = self.sam_prompt_encoder.mask_input_size
            mask_prompt = mask_inputs
            if tuple(mask_inputs.shape[-2:]) != tuple(size):
                mask_prompt = F.interpolate(
                    mask_inputs.float(),
                    size=size,
                    mode="bilinear",
                    align_corners=False,
                    antialias=True,
                )
        sparse, dense = self.sam_prompt_encoder(point_coords, point_labels, mask_prompt)
        dec = self.sam_mask_decoder(
            pix_feat,
            self.sam_prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            multimask_output=multimask,
            high_res_features=high_res,
        )
        masks, ious, tokens, obj_logits = dec.masks, dec.iou, dec.tokens, dec.object_score_logits
        present = obj_logits > 0
        if self.cfg.decoder.pred_obj_scores:
            masks = torch.where(present[:, :, None, None], masks, NO_OBJECT_SCORE)
        masks = masks.float()
        rows = torch.arange(b, device=masks.device)
        best = (
            ious.argmax(dim=-1)
            if multimask
            else torch.zeros(b, dtype=torch.long, device=masks.device)
        )
        low_res = masks[rows, best].unsqueeze(1)
        # Upsampling is per channel: upsampling only the chosen mask gives the same numbers.
        high_res_mask = F.interpolate(
            low_res, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        token = tokens[rows, best] if tokens.shape[1] > 1 else tokens[:, 0]
        obj_ptr = self._project_pointer(token)
        obj_ptr = self._gate_pointer(
            obj_ptr,
            present.float() if not self.cfg.tracking.soft_no_obj_ptr else obj_logits.sigmoid(),
        )
        return HeadsOutput(
            masks, ious, low_res, high_res_mask, ious[rows, best], obj_ptr, obj_logits
        )

    @float32_island
    def _project_pointer(self, token: torch.Tensor) -> torch.Tensor:
        return self.obj_ptr_proj(token)

    def _gate_pointer(self, obj_ptr: torch.Tensor, appearing: torch.Tensor) -> torch.Tensor:
        """Replace the pointer of an absent object by the learned "no object" pointer."""
        if not self.cfg.decoder.pred_obj_scores:
            return obj_ptr
        if self.cfg.tracking.fixed_no_obj_ptr:
            obj_ptr = appearing * obj_ptr
        return obj_ptr + (1 - appearing) * self.no_obj_ptr

    @float32_island
    def mask_as_output(
        self, pix_feat: torch.Tensor, high_res: list[torch.Tensor], masks: torch.Tensor
    ) -> HeadsOutput:
        """Take a B x 1 x S x S binary mask prompt as the prediction itself (SAM 2's rule for
        mask inputs); only the object pointer comes from the decoder."""
        masks = masks.float()
        high = masks * 20.0 - 10.0
        low = F.interpolate(
            high,
            size=(high.shape[-2] // 4, high.shape[-1] // 4),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        b = masks.shape[0]
        ious = masks.new_ones(b, 1)
        if self.cfg.tracking.use_obj_ptrs_in_encoder:
            obj_ptr = self.sam_heads(
                pix_feat, high_res, None, None, self.mask_downsample(masks), multimask=False
            ).obj_ptr
        else:
            obj_ptr = masks.new_zeros(b, self.cfg.hidden_dim)
        appearing = (masks.flatten(1) > 0).any(dim=1, keepdim=True).float()
        obj_logits = 20.0 * appearing - 10.0
        if self.cfg.decoder.pred_obj_scores:
            if self.cfg.tracking.fixed_no_obj_ptr:
                obj_ptr = appearing * obj_ptr
            obj_ptr = obj_ptr + (1 - appearing) * self.no_obj_ptr
        return HeadsOutput(low, ious, low, high, ious[:, 0], obj_ptr, obj_logits)

    # ------------------------------------------------------------------ memory

    def condition_on_memory(
        self,
        features: ImageFeatures,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        num_obj_ptr_tokens: int,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Memory attention for B objects on one frame: returns B x C x h x w.

        features: batch B (one image per object) or batch 1 (one frame for all B objects, which
        saves work); memory, memory_pos: B x M x mem_dim; key_mask: B x M (True = real token) or None.
        """
        emb, pos = features.embedding, features.pos[-1]
        _, c, h, w = emb.shape
        b = memory.shape[0]
        cur = emb.flatten(2).transpose(1, 2)
        cur_pos = pos.flatten(2).transpose(1, 2)
        out = self.memory_attention(cur, cur_pos, memory, memory_pos, num_obj_ptr_tokens, key_mask)
        return out.transpose(1, 2).reshape(b, c, h, w)

    def encode_memory(
        self,
        embedding: torch.Tensor,
        high_res_masks: torch.Tensor,
        object_score_logits: torch.Tensor,
        binarize: bool | torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A new memory from a frame's raw embedding (B x C x h x w, or 1 x C x h x w shared by
        all B objects) and its predicted masks (B x 1 x S x S logits).
        ``binarize`` may be a bool tensor (one element) so that a traced graph (ONNX) chooses per call.
        Returns (features B x mem x h x w, pos B x mem x h x w)."""
        t = self.cfg.tracking
        if isinstance(binarize, torch.Tensor):
            mask = torch.where(
                binarize.reshape(1, 1, 1, 1),
                (high_res_masks > 0).float(),
                torch.sigmoid(high_res_masks),
            )
        elif binarize and not self.training:
            mask = (high_res_masks > 0).float()
        else:
            mask = torch.sigmoid(high_res_masks)
        if t.sigmoid_scale_for_mem_enc != 1.0:
            mask = mask * t.sigmoid_scale_for_mem_enc
        if t.sigmoid_bias_for_mem_enc != 0.0:
            mask = mask + t.sigmoid_bias_for_mem_enc
        feats, pos = self._encode_distinct_masks(embedding, mask)
        if t.no_obj_embed_spatial:
            absent = (object_score_logits <= 0).float()[..., None, None]  # B x 1 x 1 x 1
            feats = feats + absent * self.no_obj_embed_spatial[..., None, None]
        return feats, pos

    def _encode_distinct_masks(
        self, embedding: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory encoder over B masks, each distinct input encoded once.

        With one frame shared by all objects, two objects whose masks are the same constant
        (absent objects: every pixel at the sigmoid's floor) get the same memory, so one of them
        is encoded for all. Only on the CPU, where finding them costs no wait for a device, in
        inference, and not while a graph is recorded (the choice depends on the values).
        """
        b = mask.shape[0]
        if (
            b == 1
            or embedding.shape[0] != 1
            or not transfer.values_free_to_read(mask.device)
            or self.training
            or graph_capture()
        ):
            return self.memory_encoder(embedding, mask)
        flat = mask.reshape(b, -1)
        lo, hi = flat.amin(dim=1), flat.amax(dim=1)  # apart: ~10x faster than aminmax(dim=1)
        # what makes a mask's memory: its one value if constant, else the object itself
        inputs = [
            v if v == h else ("object", i) for i, (v, h) in enumerate(zip(lo.tolist(), hi.tolist()))
        ]
        first: dict = {}  # input -> its row among the masks encoded
        source = [first.setdefault(key, len(first)) for key in inputs]
        if len(first) == b:
            return self.memory_encoder(embedding, mask)
        rows = [inputs.index(key) for key in first]
        feats, pos = self.memory_encoder(embedding, mask[rows])
        index = torch.tensor(source, device=mask.device)
        return feats[index], pos[index]

    @float32_island
    def pointer_position_encoding(self, rel_pos: torch.Tensor, max_obj_ptrs: int) -> torch.Tensor:
        """Temporal encoding of object pointers at relative positions rel_pos (P,): P x mem_dim."""
        t = self.cfg.tracking
        mem = self.cfg.mem_dim
        if not t.add_tpos_enc_to_obj_ptrs:
            return rel_pos.new_zeros(rel_pos.shape[0], mem, dtype=torch.float32)
        dim = self.cfg.hidden_dim if t.proj_tpos_enc_in_obj_ptrs else mem
        enc = sine_encoding_1d(rel_pos.float() / max(max_obj_ptrs - 1, 1), dim)
        return self.obj_ptr_tpos_proj(enc)
