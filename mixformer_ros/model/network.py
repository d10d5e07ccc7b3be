"""MixFormerV2: a plain ViT over template, online-template and search tokens plus four
prediction tokens, followed by small MLP heads. Read top to bottom: attention, block,
backbone, heads, the assembled network.

Module and parameter names follow the official checkpoints (timm's ViT layout), so a
released ``state_dict`` loads with ``strict=True``.

Mixed attention: template tokens (static + online) attend only to template tokens; search
and prediction tokens attend to everything. Template tokens therefore never depend on the
search image, which is what makes the template cache exact: per-layer template keys/values
are computed once per template update (``encode_templates``) and reused every frame
(``forward_search``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import MixFormerV2Config, variant_config
from .pos_embed import sincos_2d

NUM_PRED_TOKENS = 4  # one per box side, in token order l, r, t, b
BACKBONE_NORM_EPS = 1e-6


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B,C,h,w) -> (B, h*w, C)


def split_heads(y: torch.Tensor, count: int, num_heads: int) -> tuple[torch.Tensor, ...]:
    """(B, N, count*C) projections -> ``count`` tensors (B, heads, N, head_dim)."""
    B, N, _ = y.shape
    return y.reshape(B, N, count, num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    B, H, N, D = x.shape
    return x.transpose(1, 2).reshape(B, N, H * D)  # (B, N, C)


def attend_with_cache(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, template_kv: torch.Tensor) -> torch.Tensor:
    """Queries (B, heads, Nq, head_dim) over the cached template keys/values (2, B, heads, Nt, head_dim)
    followed by the tokens' own k, v (B, heads, N, head_dim): (B, Nq, C), before the output projection."""
    k = torch.cat([template_kv[0], k], dim=2)  # (B, heads, Nt + N, head_dim)
    v = torch.cat([template_kv[1], v], dim=2)
    return merge_heads(F.scaled_dot_product_attention(q, k, v))


@torch.library.custom_op("mixformer_ros::attend_to_cache", mutates_args=())
def attend_to_cache(x: torch.Tensor, qkv_weight_t: torch.Tensor, qkv_bias: torch.Tensor,
                    template_kv: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Tokens x (B, N, C) attending to cached template keys/values (2, B, heads, Nt, head_dim) and
    to themselves, before the output projection: (B, N, C). ``qkv_weight_t`` is the qkv Linear's
    weight transposed, (C, 3C).

    One operator (rather than the same lines inline) so that the ONNX export can map it onto
    ONNX Runtime's fused Attention, whose weight layout is (C, 3C) and whose ``past`` input is
    exactly this cache: one kernel instead of a chain of transposes, splits and concatenations.
    """
    return attend_with_cache(*split_heads(F.linear(x, qkv_weight_t.t(), qkv_bias), 3, num_heads), template_kv)


@attend_to_cache.register_fake
def _(x, qkv_weight_t, qkv_bias, template_kv, num_heads):
    return torch.empty_like(x)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def _project(self, x: torch.Tensor, first: int = 0, count: int = 3) -> tuple[torch.Tensor, ...]:
        """``x`` projected to ``count`` of (q, k, v) starting at index ``first``: each (B, heads, N, head_dim)."""
        C = x.shape[-1]
        rows = slice(first * C, (first + count) * C)  # the whole qkv Linear unless a part is asked for
        return split_heads(F.linear(x, self.qkv.weight[rows], self.qkv.bias[rows]), count, self.num_heads)

    def forward(self, x: torch.Tensor, num_template: int) -> torch.Tensor:
        """Joint pass over [template tokens, search + prediction tokens]."""
        q, k, v = self._project(x)
        t = num_template
        out_t = F.scaled_dot_product_attention(q[:, :, :t], k[:, :, :t], v[:, :, :t])
        out_s = F.scaled_dot_product_attention(q[:, :, t:], k, v)
        return self.proj(merge_heads(torch.cat([out_t, out_s], dim=2)))

    def forward_template(self, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Template tokens only; also returns their keys/values stacked as (2, B, heads, Nt, head_dim)."""
        q, k, v = self._project(x_t)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(merge_heads(out)), torch.stack([k, v])

    def forward_search(self, x_s: torch.Tensor, template_kv: torch.Tensor, num_queries: int | None = None) -> torch.Tensor:
        """Search + prediction tokens attending to cached template keys/values and themselves.

        With ``num_queries``, only the last ``num_queries`` tokens ask (B, num_queries, C); all still
        serve as keys/values, and the other rows' queries are never computed.
        """
        if num_queries is None:
            return self.proj(attend_to_cache(x_s, self.qkv.weight.t(), self.qkv.bias, template_kv, self.num_heads))
        (q,) = self._project(x_s[:, -num_queries:], first=0, count=1)
        k, v = self._project(x_s, first=1, count=2)
        return self.proj(attend_with_cache(q, k, v, template_kv))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block; the three entry points differ only in what attention sees."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BACKBONE_NORM_EPS)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=BACKBONE_NORM_EPS)
        self.mlp = Mlp(dim, mlp_hidden)

    def _finish(self, x: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
        x = x + attn_out
        return x + self.mlp(self.norm2(x))

    def forward(self, x: torch.Tensor, num_template: int) -> torch.Tensor:
        return self._finish(x, self.attn(self.norm1(x), num_template))

    def forward_template(self, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attn_out, kv = self.attn.forward_template(self.norm1(x_t))
        return self._finish(x_t, attn_out), kv

    def forward_search(self, x_s: torch.Tensor, template_kv: torch.Tensor, num_queries: int | None = None) -> torch.Tensor:
        """(B, Ns + 4, C), or only the last ``num_queries`` tokens updated: (B, num_queries, C)."""
        rows = x_s if num_queries is None else x_s[:, -num_queries:]
        return self._finish(rows, self.attn.forward_search(self.norm1(x_s), template_kv, num_queries))


class Backbone(nn.Module):
    def __init__(self, cfg: MixFormerV2Config):
        super().__init__()
        C = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, C)
        self.blocks = nn.Sequential(*[Block(C, cfg.num_heads, cfg.mlp_hidden) for _ in range(cfg.depth)])
        # Fixed sin-cos tables; stored in checkpoints, so they are parameters without gradients.
        self.pos_embed_s = nn.Parameter(torch.zeros(1, cfg.search_tokens, C), requires_grad=False)
        self.pos_embed_t = nn.Parameter(torch.zeros(1, cfg.template_tokens, C), requires_grad=False)
        self.reg_tokens = nn.Parameter(torch.zeros(1, NUM_PRED_TOKENS, C))
        self.pos_embed_reg = nn.Parameter(torch.zeros(1, NUM_PRED_TOKENS, C))

    def reset_position_tables(self) -> None:
        C = self.pos_embed_s.shape[-1]
        for table in (self.pos_embed_s, self.pos_embed_t):
            grid = round(table.shape[1] ** 0.5)
            table.data.copy_(torch.from_numpy(sincos_2d(C, grid)).unsqueeze(0))

    def embed_templates(self, template: torch.Tensor, online_template: torch.Tensor) -> torch.Tensor:
        B = template.shape[0]
        x = self.patch_embed(torch.cat([template, online_template])) + self.pos_embed_t  # (2B, Nt, C)
        return torch.cat([x[:B], x[B:]], dim=1)  # (B, 2*Nt, C)

    def embed_search(self, search: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(search) + self.pos_embed_s  # (B, Ns, C)
        reg = (self.reg_tokens + self.pos_embed_reg).expand(x.shape[0], -1, -1)  # (B, 4, C)
        return torch.cat([x, reg], dim=1)  # (B, Ns + 4, C)

    def forward(self, template: torch.Tensor, online_template: torch.Tensor, search: torch.Tensor) -> torch.Tensor:
        """Joint pass, as the official network runs it: (B, 2*Nt + Ns + 4, C)."""
        x_t = self.embed_templates(template, online_template)
        x = torch.cat([x_t, self.embed_search(search)], dim=1)
        for block in self.blocks:
            x = block(x, x_t.shape[1])
        return x

    def encode_templates(self, template: torch.Tensor, online_template: torch.Tensor) -> torch.Tensor:
        """Per-layer template keys/values: (depth, 2, B, heads, 2*Nt, head_dim)."""
        x = self.embed_templates(template, online_template)
        kvs = []
        for block in self.blocks:
            x, kv = block.forward_template(x)
            kvs.append(kv)
        return torch.stack(kvs)

    def forward_search(self, search: torch.Tensor, template_kv: torch.Tensor) -> torch.Tensor:
        """Prediction tokens (B, 4, C) from the search image against cached template keys/values.

        The heads read only the prediction tokens, so the last block computes queries, attention
        output and MLP for those four rows alone (its keys/values still cover every token): the
        same result as the joint pass, with about 3/4 of a block less work per frame.
        """
        x = self.embed_search(search)
        last = len(self.blocks) - 1
        for i, (block, kv) in enumerate(zip(self.blocks, template_kv)):
            x = block.forward_search(x, kv, NUM_PRED_TOKENS if i == last else None)
        return x


class BoxHead(nn.Module):
    """Each prediction token -> a distribution over bins along its axis; the box is the expectation."""

    def __init__(self, dim: int, num_bins: int, search_size: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim), nn.ReLU()),
            nn.Sequential(nn.Linear(dim, num_bins), nn.LayerNorm(num_bins)),
        )
        self.search_size = float(search_size)
        stride = search_size / num_bins
        # Bin positions in pixels of the search crop; not in the state_dict.
        self.register_buffer("bin_positions", torch.arange(num_bins) * stride, persistent=False)

    def forward(self, pred_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.layers(pred_tokens)  # (B, 4, bins), token order l, r, t, b
        logits = logits[:, [0, 2, 1, 3]]  # (B, 4, bins), side order l, t, r, b
        probs = logits.softmax(dim=-1)
        x0, y0, x1, y1 = ((probs * self.bin_positions).sum(-1) / self.search_size).unbind(-1)  # each (B,)
        boxes = torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)  # (B, 4) cx, cy, w, h
        prob_l, prob_t, prob_r, prob_b = probs.unbind(1)
        return {
            "pred_boxes": boxes.unsqueeze(1),  # (B, 1, 4)
            "side_logits": logits,
            "prob_l": prob_l, "prob_t": prob_t, "prob_r": prob_r, "prob_b": prob_b,
        }


class ScoreHead(nn.Module):
    """Confidence logit: an MLP on each prediction token, averaged over the four."""

    def __init__(self, dim: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(dim, dim), nn.ReLU()), nn.Linear(dim, 1))

    def forward(self, pred_tokens: torch.Tensor) -> torch.Tensor:
        return self.layers(pred_tokens).mean(dim=1).view(-1)  # (B, 4, 1) -> (B,)


class MixFormerV2(nn.Module):
    """Outputs (dict): pred_boxes (B,1,4) cx,cy,w,h normalised to the search crop; pred_scores (B,)
    raw logit; side_logits (B,4,bins) and prob_l/t/r/b (B,bins) per box side; pred_tokens (B,4,C)."""

    def __init__(self, cfg: MixFormerV2Config):
        super().__init__()
        self.config = cfg
        self.backbone = Backbone(cfg)
        self.box_head = BoxHead(cfg.embed_dim, cfg.num_bins, cfg.search_size)
        self.score_head = ScoreHead(cfg.embed_dim)
        self.init_weights()

    def init_weights(self) -> None:
        """ViT-style initialisation for training from scratch; checkpoints overwrite all of it."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        proj = self.backbone.patch_embed.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        nn.init.trunc_normal_(self.backbone.reg_tokens, std=0.02)
        nn.init.zeros_(self.backbone.pos_embed_reg)
        self.backbone.reset_position_tables()

    def heads(self, pred_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.box_head(pred_tokens)
        out["pred_scores"] = self.score_head(pred_tokens)
        out["pred_tokens"] = pred_tokens
        return out

    def forward(self, template: torch.Tensor, online_template: torch.Tensor, search: torch.Tensor) -> dict:
        tokens = self.backbone(template, online_template, search)
        return self.heads(tokens[:, -NUM_PRED_TOKENS:])

    def encode_templates(self, template: torch.Tensor, online_template: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_templates(template, online_template)

    def forward_search(self, search: torch.Tensor, template_kv: torch.Tensor) -> dict:
        return self.heads(self.backbone.forward_search(search, template_kv))


def build_mixformerv2(config: str | MixFormerV2Config = "B") -> MixFormerV2:
    """A float32 network in eval mode on the CPU, from a variant name ("S", "B") or a config."""
    cfg = variant_config(config) if isinstance(config, str) else config
    return MixFormerV2(cfg).eval()
