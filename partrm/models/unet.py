"""LGM's asymmetric multi-view U-Net, written for this project.

Architecture facts follow the official LGM release (ResNet blocks with GroupNorm +
SiLU, residuals scaled by sqrt(1/2), self-attention over the tokens of *all* views of
an object, fewer up blocks than down blocks so the output is smaller than the input).
Module and attribute names mirror the official ones because the official checkpoint's
state-dict keys (``down_blocks.{i}.nets.{j}.conv1.weight``, ``...attns.{j}.attn.qkv.weight``,
...) must load unchanged.

Extension point for PartRM: ``UNet.forward(x, down_hook=...)`` lets a caller rewrite
the input of every down block and of the mid block (e.g. to merge per-scale drag
features, I_l = O + Conv(M_l (+) O)), while the skip connections keep the unmodified
features. Hook level 0 is the ``conv_in`` output (full input resolution), level l + 1
the output of down block l.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DownHook = Callable[[int, Tensor], Tensor]
"""``down_hook(level, features[B*V, C_l, H_l, W_l]) -> Tensor`` of the same shape.
Level 0: the ``conv_in`` output; level l + 1: down block l's output."""

SKIP_SCALE = math.sqrt(0.5)


class SelfAttention(nn.Module):
    """Multi-head self-attention on [B, N, C] tokens (torch SDPA; no xformers needed)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention dim {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        # No qkv bias and a biased output projection: the official checkpoint has exactly these tensors.
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, N, head_dim]
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class MultiViewAttention(nn.Module):
    """Pre-norm residual self-attention whose tokens are every pixel of every view of one object.

    This is what makes the views exchange information: a [B*V, C, H, W] batch is
    regrouped to B sequences of V*H*W tokens.
    """

    def __init__(self, dim: int, num_heads: int, groups: int, skip_scale: float) -> None:
        super().__init__()
        self.skip_scale = skip_scale
        self.norm = nn.GroupNorm(groups, dim, eps=1e-5)
        self.attn = SelfAttention(dim, num_heads)

    def forward(self, x: Tensor, num_views: int) -> Tensor:
        bv, c, h, w = x.shape
        if bv % num_views:
            raise ValueError(f"batch of {bv} images is not a multiple of {num_views} views")
        b = bv // num_views
        tokens = self.norm(x).view(b, num_views, c, h * w).permute(0, 1, 3, 2).reshape(b, num_views * h * w, c)
        out = self.attn(tokens).view(b, num_views, h * w, c).permute(0, 1, 3, 2).reshape(bv, c, h, w)
        return (out + x) * self.skip_scale


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, plus a (1x1 conv when channels change) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, skip_scale: float) -> None:
        super().__init__()
        self.skip_scale = skip_scale
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=1e-5)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=1e-5)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (h + self.shortcut(x)) * self.skip_scale


def _attention_or_identity(enabled: bool, dim: int, heads: int, groups: int, skip_scale: float) -> nn.Module:
    # Identity keeps ``attns`` index-aligned with ``nets`` and adds no state-dict keys.
    return MultiViewAttention(dim, heads, groups, skip_scale) if enabled else nn.Identity()


def _apply_attention(attn: nn.Module, x: Tensor, num_views: int) -> Tensor:
    return attn(x, num_views) if isinstance(attn, MultiViewAttention) else x


class DownBlock(nn.Module):
    """``num_layers`` ResNet(+attention) layers, then an optional stride-2 conv.

    Returns the block output and every intermediate output, which become skips.
    """

    def __init__(self, in_channels: int, out_channels: int, num_layers: int, downsample: bool,
                 attention: bool, heads: int, groups: int, skip_scale: float) -> None:
        super().__init__()
        self.nets = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups, skip_scale) for i in range(num_layers)
        )
        self.attns = nn.ModuleList(
            _attention_or_identity(attention, out_channels, heads, groups, skip_scale) for _ in range(num_layers)
        )
        self.downsample = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) if downsample else None

    def forward(self, x: Tensor, num_views: int) -> tuple[Tensor, list[Tensor]]:
        skips = []
        for net, attn in zip(self.nets, self.attns):
            x = _apply_attention(attn, net(x), num_views)
            skips.append(x)
        if self.downsample is not None:
            x = self.downsample(x)
            skips.append(x)
        return x, skips


class MidBlock(nn.Module):
    """One ResNet layer, then ``num_layers`` x (attention, ResNet) at the coarsest scale."""

    def __init__(self, channels: int, num_layers: int, attention: bool, heads: int, groups: int, skip_scale: float) -> None:
        super().__init__()
        self.nets = nn.ModuleList(ResnetBlock(channels, channels, groups, skip_scale) for _ in range(num_layers + 1))
        self.attns = nn.ModuleList(
            _attention_or_identity(attention, channels, heads, groups, skip_scale) for _ in range(num_layers)
        )

    def forward(self, x: Tensor, num_views: int) -> Tensor:
        x = self.nets[0](x)
        for attn, net in zip(self.attns, self.nets[1:]):
            x = net(_apply_attention(attn, x, num_views))
        return x


class UpBlock(nn.Module):
    """Each layer concatenates one skip (deepest first), then an optional 2x nearest upsample + conv."""

    def __init__(self, in_channels: int, skip_channels: Sequence[int], out_channels: int, upsample: bool,
                 attention: bool, heads: int, groups: int, skip_scale: float) -> None:
        super().__init__()
        self.nets = nn.ModuleList(
            ResnetBlock((in_channels if i == 0 else out_channels) + c_skip, out_channels, groups, skip_scale)
            for i, c_skip in enumerate(skip_channels)
        )
        self.attns = nn.ModuleList(
            _attention_or_identity(attention, out_channels, heads, groups, skip_scale) for _ in skip_channels
        )
        self.upsample = nn.Conv2d(out_channels, out_channels, 3, padding=1) if upsample else None

    def forward(self, x: Tensor, skips: list[Tensor], num_views: int) -> Tensor:
        """``skips`` is consumed from its end (the deepest skip first)."""
        for net, attn in zip(self.nets, self.attns):
            x = net(torch.cat([x, skips.pop()], dim=1))
            x = _apply_attention(attn, x, num_views)
        if self.upsample is not None:
            x = self.upsample(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class UNet(nn.Module):
    """Asymmetric multi-view U-Net: [B*V, C_in, H, W] -> [B*V, C_out, H', W'].

    With ``len(up_channels) < len(down_channels)`` the output is smaller than the
    input by ``2 ** (len(down_channels) - len(up_channels))``; the shallowest skips
    are then never used (as in LGM).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        down_channels: Sequence[int] = (64, 128, 256, 512, 1024, 1024),
        down_attention: Sequence[bool] = (False, False, False, True, True, True),
        mid_attention: bool = True,
        up_channels: Sequence[int] = (1024, 1024, 512, 256, 128),
        up_attention: Sequence[bool] = (True, True, True, False, False),
        layers_per_block: int = 2,
        attention_heads: int = 16,
        norm_groups: int = 32,
        num_views: int = 4,
        skip_scale: float = SKIP_SCALE,
    ) -> None:
        super().__init__()
        if len(down_attention) != len(down_channels) or len(up_attention) != len(up_channels):
            raise ValueError("one attention flag per down/up block is required")
        if not 1 <= len(up_channels) <= len(down_channels):
            raise ValueError("the U-Net needs 1..len(down_channels) up blocks")
        self.num_views = num_views
        self.down_channels = tuple(down_channels)
        self.up_channels = tuple(up_channels)
        n_down = len(down_channels)

        self.conv_in = nn.Conv2d(in_channels, down_channels[0], 3, padding=1)
        skip_stack = [down_channels[0]]  # channels of the skips, in the order they are produced
        blocks, c_prev = [], down_channels[0]
        for i, c in enumerate(down_channels):
            downsample = i != n_down - 1
            blocks.append(DownBlock(c_prev, c, layers_per_block, downsample, down_attention[i],
                                    attention_heads, norm_groups, skip_scale))
            skip_stack += [c] * (layers_per_block + int(downsample))
            c_prev = c
        self.down_blocks = nn.ModuleList(blocks)

        self.mid_block = MidBlock(c_prev, 1, mid_attention, attention_heads, norm_groups, skip_scale)

        blocks = []
        for i, c in enumerate(up_channels):
            n_layers = layers_per_block + 1  # one more than down, so each down level's skips are all consumed
            taken = skip_stack[-n_layers:][::-1]
            del skip_stack[-n_layers:]
            blocks.append(UpBlock(c_prev, taken, c, i != len(up_channels) - 1, up_attention[i],
                                  attention_heads, norm_groups, skip_scale))
            c_prev = c
        self.up_blocks = nn.ModuleList(blocks)

        self.norm_out = nn.GroupNorm(norm_groups, up_channels[-1], eps=1e-5)
        self.conv_out = nn.Conv2d(up_channels[-1], out_channels, 3, padding=1)

    @property
    def down_block_channels(self) -> tuple[int, ...]:
        """Channels of each down block's output."""
        return self.down_channels

    @property
    def down_block_strides(self) -> tuple[int, ...]:
        """Spatial downsample factor of each down block's output w.r.t. the input.

        The last block does not downsample, so big gives (2, 4, 8, 16, 32, 32).
        """
        n = len(self.down_channels)
        return tuple(2 ** min(i + 1, n - 1) for i in range(n))

    @property
    def hook_channels(self) -> tuple[int, ...]:
        """Channels of what ``down_hook`` receives at each level (conv_in output, then each down block's)."""
        return (self.down_channels[0],) + tuple(self.down_channels)

    @property
    def hook_strides(self) -> tuple[int, ...]:
        """Input size / feature size at each hook level (big: 1, 2, 4, 8, 16, 32, 32)."""
        return (1,) + self.down_block_strides

    @property
    def output_stride(self) -> float:
        """Input size / output size (2 for LGM big: 256 -> 128)."""
        return 2.0 ** (len(self.down_channels) - len(self.up_channels))

    @staticmethod
    def _hook(down_hook: Optional[DownHook], level: int, x: Tensor) -> Tensor:
        if down_hook is None:
            return x
        y = down_hook(level, x)
        if y.shape != x.shape:
            raise ValueError(f"down_hook changed the level-{level} shape {tuple(x.shape)} to {tuple(y.shape)}")
        return y

    def forward(self, x: Tensor, down_hook: Optional[DownHook] = None, num_views: Optional[int] = None) -> Tensor:
        """``down_hook(level, feats)`` rewrites the input of down block ``level`` (level 0:
        the conv_in output) and, as the last level, the mid block's input.

        The hook must return a new tensor of the same shape (not modify ``feats`` in
        place): the skips keep the unmodified features.
        """
        views = self.num_views if num_views is None else num_views
        x = self.conv_in(x)
        skips = [x]
        x = self._hook(down_hook, 0, x)
        for level, block in enumerate(self.down_blocks):
            x, block_skips = block(x, views)
            skips.extend(block_skips)
            x = self._hook(down_hook, level + 1, x)
        x = self.mid_block(x, views)
        for block in self.up_blocks:
            x = block(x, skips, views)
        return self.conv_out(F.silu(self.norm_out(x)))
