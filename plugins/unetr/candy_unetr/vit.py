"""UNETR's encoder: a plain ViT (Dosovitskiy et al., 2021) over non-overlapping cubic (or square) patches.

The input is cut into ``patch``-sized tiles, each projected linearly (a convolution with kernel = stride = patch)
to ``hidden_size`` features, plus a learned position embedding per tile. Pre-norm transformer layers follow
(LayerNorm -> multi-head self-attention -> residual, LayerNorm -> MLP with GELU -> residual); the query/key/value
projection has no bias, as in UNETR's reference implementation. Because the position embedding has one entry per
tile, the encoder accepts exactly the image size it was built for.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_PATCH_CONVS: dict[int, type[nn.Conv2d] | type[nn.Conv3d]] = {2: nn.Conv2d, 3: nn.Conv3d}
EMBEDDING_STD = 0.02  # ViT's truncated-normal initialisation of the linear layers and the position embedding


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention over a token sequence ``(B, N, hidden_size)``."""

    def __init__(self, hidden_size: int, num_heads: int, *, qkv_bias: bool, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=qkv_bias)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.proj_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.num_heads, width // self.num_heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj_dropout(self.proj(attended.transpose(1, 2).reshape(batch, tokens, width)))


class TransformerLayer(nn.Module):
    """One pre-norm transformer layer: ``x + attention(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, hidden_size: int, mlp_dim: int, num_heads: int, *, qkv_bias: bool, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden_size)
        self.attention = SelfAttention(hidden_size, num_heads, qkv_bias=qkv_bias, dropout=dropout)
        self.mlp_norm = nn.LayerNorm(hidden_size)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, hidden_size), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class ViTEncoder(nn.Module):
    """Patch embedding and ``num_layers`` transformer layers; returns the outputs of the layers in ``taps``.

    ``taps`` are 1-based layer numbers (UNETR: 3, 6, 9 and 12). The last layer's output goes through a final
    LayerNorm, as ViT's does.
    """

    def __init__(self, in_ch: int, img_size: Sequence[int], *, patch: int, hidden_size: int, mlp_dim: int,
                 num_heads: int, num_layers: int, taps: Sequence[int], qkv_bias: bool, dropout: float) -> None:
        super().__init__()
        self.grid = tuple(size // patch for size in img_size)
        self.taps = tuple(taps)
        self.patch_embedding = _PATCH_CONVS[len(img_size)](in_ch, hidden_size, patch, stride=patch)
        self.position_embedding = nn.Parameter(torch.zeros(1, math.prod(self.grid), hidden_size))
        self.embedding_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(TransformerLayer(hidden_size, mlp_dim, num_heads, qkv_bias=qkv_bias,
                                                     dropout=dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_size)
        nn.init.trunc_normal_(self.position_embedding, std=EMBEDDING_STD)
        for module in self.layers.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=EMBEDDING_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Token sequences ``(B, prod(grid), hidden_size)`` after each tapped layer, in layer order."""
        tokens = self.patch_embedding(x).flatten(2).transpose(1, 2)
        tokens = self.embedding_dropout(tokens + self.position_embedding)
        outputs = []
        for number, layer in enumerate(self.layers, start=1):
            tokens = layer(tokens)
            if number in self.taps:
                outputs.append(self.norm(tokens) if number == len(self.layers) else tokens)
        return outputs

    def to_feature_map(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(B, N, hidden)`` tokens back onto the patch grid as a ``(B, hidden, *grid)`` feature map."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *self.grid)
