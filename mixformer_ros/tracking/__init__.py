"""Framework-free online tracking: crop geometry, the MixFormerV2 tracker, presets (no ROS imports)."""
from .backend import Backend
from .factory import build_tracker
from .geometry import Crop, clip_box, map_box_back, sample_target
from .presets import PRESET_NAMES, TrackerSettings, preset_settings
from .tracker import MixFormerTracker, TrackResult

__all__ = [
    "Backend",
    "Crop",
    "MixFormerTracker",
    "PRESET_NAMES",
    "TrackResult",
    "TrackerSettings",
    "build_tracker",
    "clip_box",
    "map_box_back",
    "preset_settings",
    "sample_target",
]
