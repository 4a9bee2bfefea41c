"""Prompt encoder: points, boxes (as two labelled corner points) and low-res masks."""

from __future__ import annotations

import torch
from torch import nn

from .common import KeptWhileUnchanged, LayerNorm2d
from .precision import float32_island

# Point labels understood by the encoder. Boxes enter as two points labelled
# BOX_TOP_LEFT / BOX_BOTTOM_RIGHT; PAD marks a "not a point" placeholder.
PAD, NEGATIVE, POSITIVE, BOX_TOP_LEFT, BOX_BOTTOM_RIGHT = -1, 0, 1, 2, 3


class PositionEmbeddingRandom(nn.Module):
    """Fourier features of normalised coordinates with a fixed random Gaussian matrix."""

    def __init__(self, num_pos_feats: int = 64):
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_pos_feats))

    @float32_island
    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        """coords in [0, 1], ... x 2 -> ... x (2 * num_pos_feats)."""
        coords = (2 * coords - 1) @ self.positional_encoding_gaussian_matrix
        coords = 2 * torch.pi * coords
        return torch.cat([coords.sin(), coords.cos()], dim=-1)

    def grid(self, height: int, width: int) -> torch.Tensor:
        """Encoding of every cell centre of a height x width grid: C x H x W."""
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # H x W x 2 (x, y)
        return self._encode(grid).permute(2, 0, 1)

    def points(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Encode pixel coordinates (x, y) of an image of image_size = (H, W)."""
        coords = coords.clone().float()
        coords[..., 0] = coords[..., 0] / image_size[1]
        coords[..., 1] = coords[..., 1] / image_size[0]
        return self._encode(coords)


class PromptEncoder(nn.Module):
    """Encodes prompts into sparse tokens (points) and a dense embedding (mask or "no mask")."""

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int = 16,
        pad_boxed_prompts: bool = True,
    ):
        """``pad_boxed_prompts``: append the padding point to prompts that hold a box too (SAM 2,
        whose predictors pass box corners as points); SAM 1 pads only prompts without a box."""
        super().__init__()
        self.embed_dim = embed_dim
        self.pad_boxed_prompts = pad_boxed_prompts
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # One learned embedding per label: negative, positive, box corner 1, box corner 2.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)
        self._dense_pe = KeptWhileUnchanged()

    def get_dense_pe(self) -> torch.Tensor:
        """Position encoding of the image embedding grid: 1 x C x h x w. A constant of the
        (fixed, random) encoding matrix: kept between calls while the matrix is unchanged."""
        return self._dense_pe.get(
            (self.pe_layer.positional_encoding_gaussian_matrix,),
            lambda: self.pe_layer.grid(*self.image_embedding_size).unsqueeze(0),
        )

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """B x N x 2 coordinates (model input pixels) and B x N labels -> B x (N + 1) x C.

        A padding point is appended (B x (N + 1) x C), as SAM 2 does when no box is given
        separately; without ``pad_boxed_prompts``, prompts holding box corners get none (SAM 1).
        """
        b = coords.shape[0]
        if self.pad_boxed_prompts or not self._has_box(labels):
            coords = torch.cat([coords, coords.new_full((b, 1, 2), -0.5)], dim=1)
            labels = torch.cat([labels, labels.new_full((b, 1), PAD)], dim=1)
        return self.embed_labelled_points(coords, labels)

    def embed_labelled_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """B x N x 2 coordinates and B x N labels -> B x N x C, as given: no padding point is
        added (for callers that pad themselves, like the ONNX decoder whose caller follows
        :attr:`pad_boxed_prompts`). A PAD point's coordinates do not matter."""
        coords = coords + 0.5  # pixel centres
        emb = self.pe_layer.points(coords, self.input_image_size)
        lab = labels.unsqueeze(-1)
        emb = torch.where(lab == PAD, self.not_a_point_embed.weight.expand_as(emb), emb)
        for value in range(4):
            emb = emb + (lab == value).to(emb.dtype) * self.point_embeddings[value].weight
        return emb

    @staticmethod
    def _has_box(labels: torch.Tensor) -> bool:
        boxed = ((labels == BOX_TOP_LEFT) | (labels == BOX_BOTTOM_RIGHT)).any(dim=1)
        if bool(boxed.any()) and not bool(boxed.all()):
            raise ValueError(
                "a batch of prompts must either all hold a box or none (they would need different padding)"
            )
        return bool(boxed.any())

    @float32_island
    def forward(
        self,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        masks: torch.Tensor | None,
        batch_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (sparse B x N x C, dense B x C x h x w). ``masks`` are B x 1 x 4h x 4w logits."""
        if coords is not None:
            b = coords.shape[0]
        elif masks is not None:
            b = masks.shape[0]
        else:
            b = batch_size or 1
        device = self.no_mask_embed.weight.device
        if coords is not None:
            sparse = self.embed_points(coords, labels)
        else:
            sparse = torch.empty(b, 0, self.embed_dim, device=device)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(b, -1, h, w)
        return sparse, dense
