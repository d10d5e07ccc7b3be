"""Network configurations: the two released variants and any student size in between."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class MixFormerV2Config:
    """Shape of a MixFormerV2 network (ViT backbone + four prediction tokens + MLP heads)."""

    depth: int = 8
    embed_dim: int = 768
    num_heads: int = 12
    mlp_ratio: float = 4.0
    template_size: int = 128
    search_size: int = 288
    patch_size: int = 16
    num_bins: int = 96

    def __post_init__(self) -> None:
        problems = []
        if self.depth < 1:
            problems.append(f"depth must be >= 1, got {self.depth}")
        if self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        for name in ("template_size", "search_size"):
            size = getattr(self, name)
            if size <= 0 or size % self.patch_size:
                problems.append(f"{name} {size} must be a positive multiple of patch_size {self.patch_size}")
        if self.num_bins < 2:
            problems.append(f"num_bins must be >= 2, got {self.num_bins}")
        if self.mlp_ratio <= 0:
            problems.append(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if problems:
            raise ValueError("invalid MixFormerV2Config: " + "; ".join(problems))

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def template_tokens(self) -> int:
        return (self.template_size // self.patch_size) ** 2

    @property
    def search_tokens(self) -> int:
        return (self.search_size // self.patch_size) ** 2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "MixFormerV2Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown MixFormerV2Config fields: {unknown}")
        return cls(**values)


# The released checkpoints (official yaml 224_depth4_mlp1_score and 288_depth8_score).
VARIANTS: dict[str, MixFormerV2Config] = {
    "S": MixFormerV2Config(depth=4, mlp_ratio=1.0, template_size=112, search_size=224),
    "B": MixFormerV2Config(depth=8, mlp_ratio=4.0, template_size=128, search_size=288),
}


def variant_config(variant: str) -> MixFormerV2Config:
    try:
        return VARIANTS[variant.upper()]
    except KeyError:
        raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}") from None
