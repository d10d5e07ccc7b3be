"""A stand-in for the tracker node that answers every frame at once: the floor of an rclpy node here.

bench/node_latency.py runs it beside the real node. It takes each camera frame the way the
tracker node does (same Fast DDS profile, subscription QoS, executor (``spin_node``), raw
subscription and image conversion) and publishes a Detection2D with the frame's header on the
tracker's detection topic straight from the image callback. Its lockstep latency is what transport,
(de)serialisation and the Python executor cost before any tracking, so "node latency minus
tracker step" can be compared with it.

    python bench/echo_node.py --ros-args -r __ns:=/t
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mixformer_ros.tracker_node import apply_dds_profile  # noqa: E402


def main() -> int:
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        return 0
    apply_dds_profile()  # before rclpy creates the participant, as the tracker node does

    import rclpy
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.executors import ExternalShutdownException
    from rclpy.node import Node
    from rclpy.qos import ReliabilityPolicy
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2D

    from mixformer_ros.ros.conversions import image_to_rgb, make_detection
    from mixformer_ros.ros.node import spin_node
    from mixformer_ros.ros.parameters import NodeSettings
    from mixformer_ros.ros.qos import profile_for
    from mixformer_ros.ros.serialized import read_image

    rclpy.init(args=sys.argv)
    node = Node("mixformer_tracker")  # the tracker's name, so its detection topic is the same
    detections = node.create_publisher(Detection2D, "~/detection", 10)

    def on_image(serialized: bytes) -> None:
        msg = read_image(serialized)
        rgb = image_to_rgb(msg)
        detections.publish(make_detection(msg.header, [0, 0, rgb.shape[1], rgb.shape[0]], 1.0, "", "echo"))

    # A lockstep camera offers reliable QoS, which is what the tracker's "auto" QoS picks for it.
    node.create_subscription(Image, "image", on_image,
                             profile_for(ReliabilityPolicy.RELIABLE, NodeSettings.frame_buffer_size),
                             callback_group=MutuallyExclusiveCallbackGroup(), raw=True)
    try:
        spin_node(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # bench/node_latency.py ends the run with SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
