"""pip installer for the framework-free core of mixformer_ros (model, tracking, backends, evaluation, training).

ROS users build this repository with colcon instead: package.xml declares it an ament_cmake
package, so colcon runs CMakeLists.txt (interfaces + this Python package) and never this file.
`pip install .` gives the same Python package without the msg/srv interfaces; the ROS node
then still needs a ROS 2 installation with rclpy, vision_msgs and the built interfaces.
"""
import re
from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(r"<version>([^<]+)</version>", (HERE / "package.xml").read_text()).group(1)

setup(
    name="mixformer_ros",
    version=VERSION,
    description="MixFormerV2 single-object tracking: PyTorch/ONNX Runtime backends, evaluation and training, with a ROS 2 node",
    license="Apache-2.0",
    python_requires=">=3.10",
    # Namespace discovery also picks up data-only folders (e.g. training/configs).
    packages=find_namespace_packages(include=["mixformer_ros", "mixformer_ros.*"], exclude=["*.__pycache__"]),
    package_data={"": ["*.xml", "*.yaml", "*.yml", "*.json", "*.txt"]},
    # Where colcon puts it too: <prefix>/share/mixformer_ros/models (mixformer_ros.demo looks there).
    data_files=[("share/mixformer_ros/models", ["models/demo_tracker.pth.tar", "models/MODEL_CARD.md"])],
    install_requires=[
        "numpy>=1.26",
        "torch>=2.1",
        "opencv-contrib-python-headless>=4.10",
        "pyyaml>=6.0",
        "tqdm>=4.66",
    ],
    extras_require={
        "onnx": ["onnxruntime>=1.20", "onnx>=1.17", "onnxscript>=0.2"],
        "evaluation": ["matplotlib>=3.8", "rosbags>=0.10"],
        "test": ["pytest>=8.0"],
    },
    entry_points={
        "console_scripts": [
            "mixformer-tracker-node = mixformer_ros.tracker_node:main",
            "mixformer-export = mixformer_ros.backends.export:main",
            "mixformer-eval = mixformer_ros.evaluation.cli:main",
            "mixformer-train = mixformer_ros.training.cli:main",
            "mixformer-demo = mixformer_ros.demo:main",
        ],
    },
)
