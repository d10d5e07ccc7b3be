"""The tracker node's parameters: one table with defaults, descriptions, ranges and mutability.

The table is plain data so the launch file, the YAML configs and the documentation can be
checked against it without starting a node. Read-only parameters shape the model or the
subscription and need a restart; the others are applied on the next frame.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
)

from mixformer_ros.ros.qos import QOS_MODES

VARIANTS = ("S", "B", "auto")
BACKENDS = ("torch", "onnxruntime")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: object
    description: str
    read_only: bool = True
    choices: tuple[str, ...] = ()
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None

    def descriptor(self) -> ParameterDescriptor:
        desc = self.description
        if self.read_only:
            desc += " (read-only: needs a restart)"
        d = ParameterDescriptor(description=desc, read_only=self.read_only)
        if self.choices:
            d.additional_constraints = "one of: " + ", ".join(self.choices)
        if self.int_range is not None:
            d.integer_range = [IntegerRange(from_value=self.int_range[0], to_value=self.int_range[1], step=1)]
        if self.float_range is not None:
            d.floating_point_range = [
                FloatingPointRange(from_value=self.float_range[0], to_value=self.float_range[1], step=0.0)
            ]
        return d


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "variant",
        "auto",
        "MixFormerV2 variant: S (small, CPU), B (base, GPU), or auto (the network shape recorded in the checkpoint, "
        "or in the ONNX export; S without either)",
        choices=VARIANTS,
    ),
    ParamSpec("backend", "torch", "Inference backend", choices=BACKENDS),
    ParamSpec("device", "cpu", "Inference device: cpu, cuda or cuda:N"),
    ParamSpec(
        "precision",
        "fp32",
        "Arithmetic: fp32 (the official outputs), bf16 (torch; CUDA or CPUs with AMX/avx512_bf16), "
        "fp16 (CUDA), int8 (onnxruntime on the CPU)",
        choices=PRECISIONS,
    ),
    ParamSpec(
        "checkpoint",
        "",
        "MixFormerV2 checkpoint (.pth.tar, official {'net': state_dict} layout); empty = untrained weights",
    ),
    ParamSpec(
        "onnx_model",
        "",
        "Backend onnxruntime: folder written by mixformer_ros.backends.export; empty = export the checkpoint once into the cache",
    ),
    ParamSpec("preset", "lasot", "Tracker preset (search factor, template update interval)"),
    ParamSpec("search_factor", 0.0,
              "Search region size / target size; 0 = the checkpoint's training record, else the preset",
              float_range=(0.0, 20.0)),  # the tracker's MAX_CROP_FACTOR (not imported: it would load torch)
    ParamSpec("update_interval", 0, "Frames between online-template updates; 0 = preset value", int_range=(0, 100000)),
    ParamSpec(
        "size_update_rate",
        1.0,
        "Fraction of the network's size change a box takes each frame (1 = the official tracker)",
        float_range=(0.01, 1.0),
    ),
    ParamSpec("num_threads", 0, "CPU threads for inference; 0 = library default", int_range=(0, 256)),
    ParamSpec("qos", "auto", "Image subscription QoS; auto follows the publishers' reliability", choices=QOS_MODES),
    ParamSpec("compressed", False, "Subscribe to image/compressed (JPEG/PNG) instead of image"),
    ParamSpec("frame_buffer_size", 30, "Recent frames kept for ~/init requests by stamp", int_range=(1, 1000)),
    ParamSpec("autostart", True, "Configure and activate the lifecycle node on start"),
    ParamSpec(
        "lost_threshold",
        0.25,
        "Score under which a frame counts towards LOST",
        read_only=False,
        float_range=(0.0, 1.0),
    ),
    ParamSpec(
        "lost_patience",
        10,
        "Consecutive low-score frames before the state becomes LOST",
        read_only=False,
        int_range=(1, 100000),
    ),
    ParamSpec("publish_debug_image", False, "Publish the annotated ~/debug_image", read_only=False),
)

PARAMETER_NAMES = tuple(p.name for p in PARAMETERS)


@dataclass
class NodeSettings:
    """Values of all node parameters, read in on_configure and updated for the dynamic ones."""

    variant: str = "S"
    backend: str = "torch"
    device: str = "cpu"
    precision: str = "fp32"
    checkpoint: str = ""
    onnx_model: str = ""
    preset: str = "lasot"
    search_factor: float = 0.0
    update_interval: int = 0
    size_update_rate: float = 1.0
    num_threads: int = 0
    qos: str = "auto"
    compressed: bool = False
    frame_buffer_size: int = 30
    autostart: bool = True
    lost_threshold: float = 0.25
    lost_patience: int = 10
    publish_debug_image: bool = False


assert {f.name for f in fields(NodeSettings)} == set(PARAMETER_NAMES), "table and dataclass disagree"


def declare_all(node) -> None:
    for spec in PARAMETERS:
        node.declare_parameter(spec.name, spec.default, spec.descriptor())


def read_settings(node) -> NodeSettings:
    return NodeSettings(**{name: node.get_parameter(name).value for name in PARAMETER_NAMES})


def check_choices(settings: NodeSettings) -> list[str]:
    """Values that the descriptors cannot constrain (string choices, device syntax)."""
    problems = []
    for spec in PARAMETERS:
        value = getattr(settings, spec.name)
        if spec.choices and value not in spec.choices:
            problems.append(f"{spec.name}='{value}' is not one of {', '.join(spec.choices)}")
    dev = settings.device
    if not (dev == "cpu" or dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
        problems.append(f"device='{dev}' must be cpu, cuda or cuda:N")
    return problems

