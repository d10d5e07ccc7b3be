"""Official test-time settings, per benchmark and variant (experiments/*.yaml and the test scripts
of the official repository; search factor 4.4 for S on LaSOT as in the parity fixture)."""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass

from ..model import VARIANTS, MixFormerV2Config


# Crops wider than this many target sizes only add clutter (the presets use 2 to 5); far larger ones
# ran OpenCV out of memory instead of failing with a reason.
MAX_CROP_FACTOR = 20.0


@dataclass(frozen=True)
class TrackerSettings:
    search_factor: float
    update_interval: int
    template_factor: float = 2.0
    max_score_decay: float = 1.0
    # Not in the official tracker, so off (1.0) by default: a box keeps the network's centre but moves its
    # width and height only this fraction of the way to the network's, a low-pass filter on size
    # (SiamFC and SiamRPN damp their scale the same way). Single-frame size errors then neither shrink the
    # next search region onto a partly hidden target nor widen it onto clutter.
    size_update_rate: float = 1.0
    # Only one online template is supported: the official code crashes with more (the network's
    # joint forward cannot take a batch of online templates), so we refuse it up front.
    online_size: int = 1

    def __post_init__(self) -> None:
        if self.online_size != 1:
            raise ValueError(
                f"online_size={self.online_size} is not supported: MixFormerV2 takes exactly one online "
                "template (the official tracker crashes with more)"
            )
        for name in ("search_factor", "template_factor"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and 0 < value <= MAX_CROP_FACTOR):
                raise ValueError(f"{name} must be a number in (0, {MAX_CROP_FACTOR}] (crop side / target size), "
                                 f"got {value!r}")
        if not (isinstance(self.update_interval, numbers.Integral) and not isinstance(self.update_interval, bool)
                and self.update_interval >= 1):
            raise ValueError(f"update_interval must be a whole number of frames >= 1, got {self.update_interval!r}")
        if not 0 < self.max_score_decay <= 1:
            raise ValueError(f"max_score_decay must be in (0, 1], got {self.max_score_decay}")
        if not 0 < self.size_update_rate <= 1:
            raise ValueError(f"size_update_rate must be in (0, 1], got {self.size_update_rate}")

    def replace(self, **overrides) -> "TrackerSettings":
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown tracker settings {unknown}")
        return dataclasses.replace(self, **overrides)


# preset -> variant -> (search_factor, update_interval)
_PRESETS: dict[str, dict[str, tuple[float, int]]] = {
    "lasot": {"S": (4.4, 200), "B": (5.0, 200)},
    "got10k": {"S": (4.5, 15), "B": (4.5, 10)},
    "trackingnet": {"S": (4.5, 25), "B": (4.5, 25)},
    "vot": {"S": (4.5, 10), "B": (4.5, 10)},
    "demo": {"S": (4.5, 25), "B": (4.5, 25)},  # the official video demo's settings
}
PRESET_NAMES = tuple(_PRESETS)


def variant_of(config: MixFormerV2Config) -> str:
    """"S" or "B" for the released shapes; other networks use the column whose search size is closer."""
    for name, cfg in VARIANTS.items():
        if cfg == config:
            return name
    return "S" if config.search_size <= VARIANTS["S"].search_size else "B"


def preset_settings(preset: str, config: MixFormerV2Config,
                    trained_crop: dict[str, float] | None = None) -> TrackerSettings:
    """The preset's settings for this network shape. ``trained_crop`` (``trained_crop_factors`` of
    a file from our training) replaces the preset's crop factors: the scale the network learnt."""
    try:
        column = _PRESETS[preset.lower()]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; expected one of {list(PRESET_NAMES)}") from None
    search_factor, update_interval = column[variant_of(config)]
    return TrackerSettings(search_factor=search_factor, update_interval=update_interval).replace(**(trained_crop or {}))
