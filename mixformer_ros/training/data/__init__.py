"""Training data: sequence readers, a synthetic generator, the pair sampler and crop processing."""
from .processing import CropConfig, PairDataset
from .readers import COCOReader, DataPathError, GOT10kReader, LaSOTReader, OTBReader, TrackingNetReader
from .sampler import PairSampler, SamplerConfig
from .sequence import FrameReadError, Sequence
from .synthetic import SyntheticConfig, SyntheticDataset

__all__ = [
    "COCOReader", "CropConfig", "DataPathError", "FrameReadError", "GOT10kReader", "LaSOTReader", "OTBReader",
    "PairDataset", "PairSampler", "SamplerConfig", "Sequence", "SyntheticConfig", "SyntheticDataset",
    "TrackingNetReader",
]
