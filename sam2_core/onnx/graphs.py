"""The modules that are traced into ONNX graphs: thin wrappers that call the model's own parts
with plain tensor inputs (no ``None``, no Python flags), so one graph serves every call.

- :class:`EncoderGraph`: a normalised image -> the decoder's image embedding (SAM 2: with
  ``no_mem_embed`` added, as for a still image or a first conditioning frame), the two
  high-resolution skip features and the raw frame embedding that memory reads.
- :class:`DecoderGraph`: image features + points (+ an optional low-res mask) -> every mask
  candidate. Slot 0 is the single-mask answer (``multimask_output=False``, with SAM 2's stability
  fallback where the model has it), slots 1-3 the multimask candidates; SAM 2 adds the object
  score and, per slot, the gated object pointer that goes with it.
- :class:`MemoryAttentionGraph` and :class:`MemoryEncoderGraph` (SAM 2): the video step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.sam2 import ImageFeatures, SAM2Model
from ..sam1.model import SAM1Model


class EncoderGraph(nn.Module):
    """B x 3 x S x S normalised images -> (image_embeddings, [high_res_feats_0, high_res_feats_1,
    vision_features]); the bracketed outputs are SAM 2's."""

    def __init__(self, model: SAM2Model | SAM1Model):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.model.encode_image(image)
        if not isinstance(self.model, SAM2Model):
            return (feats.embedding,)
        raw = feats.embedding
        embed = self.model.add_no_memory(raw)
        return (embed, *feats.high_res, raw)


class DecoderGraph(nn.Module):
    """Prompts -> all mask slots for B prompts on one image (or on B per-object features).

    Inputs: image_embeddings 1 (or B) x C x h x w; SAM 2: high_res_feats_0 / _1 likewise;
    point_coords B x N x 2 (pixels of the model input, padding point already appended by the
    caller), point_labels B x N (int64: -1 pad, 0 negative, 1 positive, 2 / 3 box corners);
    mask_input 1 (or B) x 1 x 4h x 4w low-res logits; has_mask_input (1,) float (0: no mask).
    Outputs: low_res_logits B x 4 x 4h x 4w, iou_predictions B x 4; SAM 2 also
    object_score_logits B x 1 and object_pointers B x 4 x C.
    """

    def __init__(self, model: SAM2Model | SAM1Model):
        super().__init__()
        self.model = model
        self.is_sam2 = isinstance(model, SAM2Model)
        self.register_buffer("dense_pe", model.sam_prompt_encoder.get_dense_pe(), persistent=False)

    def forward(
        self, image_embeddings: torch.Tensor, *rest: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        if self.is_sam2:
            high_0, high_1, coords, labels, mask_input, has_mask = rest
        else:
            coords, labels, mask_input, has_mask = rest
        pe = self.model.sam_prompt_encoder
        dec = self.model.sam_mask_decoder
        b = coords.shape[0]
        sparse = pe.embed_labelled_points(coords, labels)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = torch.where(
            has_mask.reshape(1, 1, 1, 1) > 0, pe.mask_downscaling(mask_input), no_mask
        )
        h, w = pe.image_embedding_size
        dense = dense.expand(b, -1, h, w)
        image = image_embeddings.expand(b, -1, -1, -1)
        high = (
            [high_0.expand(b, -1, -1, -1), high_1.expand(b, -1, -1, -1)] if self.is_sam2 else None
        )
        # All four mask tokens at once; the decoder's own rules then pick what each slot holds.
        masks, iou, tokens, obj_logits = dec._predict(
            image, self.dense_pe, sparse, dense, high, False
        )
        if dec.cfg.dynamic_multimask_via_stability:
            single, single_iou = dec._stable_or_best(masks, iou)
        else:
            single, single_iou = masks[:, :1], iou[:, :1]
        low_res = torch.cat([single, masks[:, 1:]], dim=1)
        ious = torch.cat([single_iou, iou[:, 1:]], dim=1)
        if not self.is_sam2:
            return low_res, ious
        if dec.cfg.use_multimask_token_for_obj_ptr:
            slot_tokens = tokens  # each slot's own mask token (slot 0: the single-mask token)
        else:
            slot_tokens = tokens[:, :1].expand(-1, 4, -1)
        model = self.model
        pointers = model.obj_ptr_proj(slot_tokens)
        appearing = (
            (obj_logits > 0).float()
            if not model.cfg.tracking.soft_no_obj_ptr
            else obj_logits.sigmoid()
        )
        pointers = model._gate_pointer(pointers, appearing.unsqueeze(-1))
        return low_res, ious, obj_logits, pointers


class MemoryAttentionGraph(nn.Module):
    """One object's frame conditioned on its memories (SAM 2's memory attention).

    Inputs: vision_features 1 x C x h x w (the frame's raw embedding); memory_features
    N x mem x h x w (the selected spatial memories); memory_slots N int64 (each memory's temporal
    slot: 0 for conditioning frames, 1..num_maskmem-1 for the frames behind); object_pointers
    P x C; object_pointer_distances P int64 (temporal distances, as the memory rule gives them);
    pointer_span () int64 (the video length the pointers' encoding assumes:
    min(num_frames, max_obj_ptrs_in_encoder)). Output: conditioned_features 1 x C x h x w.
    """

    def __init__(self, model: SAM2Model):
        super().__init__()
        self.model = model
        cfg = model.cfg
        with torch.no_grad():
            probe = torch.zeros(1, 3, cfg.image_size, cfg.image_size, device=model.device)
            pos = model.encode_image(probe).pos[-1]
            mem_pos = model.memory_encoder.position_encoding(
                torch.zeros(1, cfg.mem_dim, *pos.shape[-2:], device=model.device)
            )
        self.register_buffer("vision_pos", pos.clone(), persistent=False)
        self.register_buffer(
            "memory_pos", mem_pos.flatten(2).transpose(1, 2).clone(), persistent=False
        )  # 1 x hw x mem
        self.split = cfg.hidden_dim // cfg.mem_dim if cfg.mem_dim < cfg.hidden_dim else 1

    def forward(
        self,
        vision_features: torch.Tensor,
        memory_features: torch.Tensor,
        memory_slots: torch.Tensor,
        object_pointers: torch.Tensor,
        object_pointer_distances: torch.Tensor,
        pointer_span: torch.Tensor,
    ) -> torch.Tensor:
        model = self.model
        mem_dim = model.cfg.mem_dim
        num_maskmem = model.cfg.tracking.num_maskmem
        tokens = memory_features.flatten(2).transpose(1, 2)  # N x hw x mem
        tpos = model.maskmem_tpos_enc.reshape(num_maskmem, 1, mem_dim)[
            num_maskmem - 1 - memory_slots
        ]
        spatial_pos = self.memory_pos + tpos  # N x hw x mem
        p = object_pointers.shape[0]
        ptr_tokens = object_pointers.reshape(p * self.split, mem_dim)
        # pointer_position_encoding divides the distances by max(span - 1, 1); the span is an input
        # here, so divide first and pass a span of 2 (a divisor of 1).
        scaled = object_pointer_distances.float() / (pointer_span.float() - 1).clamp(min=1)
        ptr_pos = model.pointer_position_encoding(scaled, 2)
        ptr_pos = (
            ptr_pos.unsqueeze(1).expand(p, self.split, mem_dim).reshape(p * self.split, mem_dim)
        )
        memory = torch.cat([tokens.reshape(1, -1, mem_dim), ptr_tokens.unsqueeze(0)], dim=1)
        memory_pos = torch.cat([spatial_pos.reshape(1, -1, mem_dim), ptr_pos.unsqueeze(0)], dim=1)
        feats = ImageFeatures([vision_features], [self.vision_pos])
        return model.condition_on_memory(feats, memory, memory_pos, p * self.split)


class MemoryEncoderGraph(nn.Module):
    """A new memory from one object's output on a frame (SAM 2's memory encoder).

    Inputs: vision_features 1 x C x h x w (raw frame embedding); mask_logits 1 x 1 x 4h x 4w
    (the object's low-res output, upsampled here as the tracker does); object_score_logits 1 x 1;
    binarize (1,) bool (True for prompted frames when the model binarizes their masks).
    Output: memory_features 1 x mem x h x w.
    """

    def __init__(self, model: SAM2Model):
        super().__init__()
        self.model = model

    def forward(
        self,
        vision_features: torch.Tensor,
        mask_logits: torch.Tensor,
        object_score_logits: torch.Tensor,
        binarize: torch.Tensor,
    ) -> torch.Tensor:
        size = self.model.image_size
        high = F.interpolate(mask_logits, size=(size, size), mode="bilinear", align_corners=False)
        feats, _ = self.model.encode_memory(
            vision_features, high, object_score_logits, binarize=binarize
        )
        return feats
