"""Files the launch file hands to the node and to rviz2, chosen from its arguments.

Kept out of ``launch/tracker.launch.py`` so they can be tested where ``launch`` is not installed.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

# The topics tracker.rviz shows: the node's debug image (no namespace) and the default camera.
_RVIZ_DEBUG_IMAGE = "/mixformer_tracker/debug_image"
_RVIZ_CAMERA_IMAGE = "/camera/image_raw"


def params_file_for(share_dir: str | Path, variant: str) -> str:
    """The shipped parameter file that fits ``variant``: B runs on the GPU, anything else is S on the CPU."""
    name = "mixformerv2_b_gpu.yaml" if variant == "B" else "mixformerv2_s_cpu.yaml"
    return str(Path(share_dir) / "config" / name)


def rviz_config_for(share_dir: str | Path, namespace: str, image_topic: str) -> str:
    """tracker.rviz showing this launch's topics: the shipped file when they are its defaults,
    otherwise a copy (in a temporary folder) with the debug image under ``namespace`` and the
    camera image on ``image_topic``."""
    shipped = Path(share_dir) / "config" / "tracker.rviz"
    namespace = "/" + namespace.strip("/") if namespace.strip("/") else ""
    topics = {_RVIZ_DEBUG_IMAGE: namespace + _RVIZ_DEBUG_IMAGE, _RVIZ_CAMERA_IMAGE: image_topic}
    if all(old == new for old, new in topics.items()):
        return str(shipped)
    config = yaml.safe_load(shipped.read_text())
    for display in config["Visualization Manager"]["Displays"]:
        topic = display.get("Topic")
        if topic and topic.get("Value") in topics:
            topic["Value"] = topics[topic["Value"]]
    out = Path(tempfile.mkdtemp(prefix="mixformer_rviz_")) / "tracker.rviz"
    out.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(out)
