"""The MixFormerV2 network, its configurations and checkpoint I/O (no ROS imports)."""
from .checkpoint import (
    CheckpointError,
    config_from_state_dict,
    load_model,
    load_model_and_record,
    load_weights,
    read_checkpoint,
    save_checkpoint,
    trained_crop_factors,
)
from .config import VARIANTS, MixFormerV2Config, variant_config
from .network import MixFormerV2, build_mixformerv2
from .pos_embed import sincos_2d

__all__ = [
    "CheckpointError",
    "MixFormerV2",
    "MixFormerV2Config",
    "VARIANTS",
    "build_mixformerv2",
    "config_from_state_dict",
    "load_model",
    "load_model_and_record",
    "load_weights",
    "read_checkpoint",
    "save_checkpoint",
    "sincos_2d",
    "trained_crop_factors",
    "variant_config",
]
