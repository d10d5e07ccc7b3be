"""The parity fixture's deterministic weights and files (see ../shared/fixtures/mixformerv2_parity/README.md)."""
from __future__ import annotations

import zlib
from functools import lru_cache

import numpy as np
import torch

from paths import FIXTURE_DIR
from mixformer_ros.model import build_mixformerv2


def recipe_state_dict(variant: str) -> dict[str, torch.Tensor]:
    """Every key seeded by the CRC32 of its name: 1-D weights ~ 1 + 0.1 N, other 1-D ~ 0.1 N, rest ~ 0.02 N."""
    sd = {}
    for key, ref in build_mixformerv2(variant).state_dict().items():
        g = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
        noise = torch.randn(ref.shape, generator=g)
        if ref.dim() == 1 and key.endswith("weight"):
            sd[key] = 1.0 + 0.1 * noise
        elif ref.dim() == 1:
            sd[key] = 0.1 * noise
        else:
            sd[key] = 0.02 * noise
    return sd


@lru_cache(maxsize=None)
def fixture_state_dict(variant: str) -> dict[str, torch.Tensor]:
    return recipe_state_dict(variant)


def write_fixture_checkpoint(variant: str, path) -> None:
    """The fixture weights in the official file layout ({'net': state_dict})."""
    torch.save({"net": fixture_state_dict(variant)}, path)


def load_npz(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURE_DIR / name) as data:
        return {k: data[k] for k in data.files}


def video_rgb() -> tuple[list[np.ndarray], list[float]]:
    video = load_npz("video.npz")
    frames = [np.ascontiguousarray(f[..., ::-1]) for f in video["frames_bgr"]]
    return frames, video["init_box_xywh"].tolist()


# Official LaSOT test settings used to record the tracker fixture.
FIXTURE_SEARCH_FACTOR = {"S": 4.4, "B": 5.0}
