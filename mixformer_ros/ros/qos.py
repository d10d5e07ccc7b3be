"""Subscription QoS for camera topics that works across processes out of the box.

REP-2003 asks consumers of sensor data for best-effort QoS. With the default Fast DDS
settings, though, a best-effort reader in another process receives nothing from a reliable
camera publishing 640x480 frames: a large sample's fragments are never repaired. A reliable
reader, on the other hand, cannot match a best-effort publisher at all. So the node's default
("auto") does what rosbag2 does: it looks at the QoS the publishers on the topic offer and
subscribes with the weakest reliability that all of them can serve, and looks again whenever
the set of publishers changes.
"""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)

QOS_MODES = ("auto", "reliable", "best_effort", "sensor_data")


def profile_for(reliability: ReliabilityPolicy, depth: int = 5) -> QoSProfile:
    """Volatile keep-last profile with the given reliability (volatile matches any durability).

    The node passes its frame-buffer size as ``depth``: a burst the buffer could hold is not
    overwritten inside DDS before the callback takes it.
    """
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=reliability,
        durability=DurabilityPolicy.VOLATILE,
    )


def fixed_profile(mode: str, depth: int = 5) -> QoSProfile:
    """The profile of a non-auto mode."""
    if mode == "reliable":
        return profile_for(ReliabilityPolicy.RELIABLE, depth)
    if mode == "best_effort":
        return profile_for(ReliabilityPolicy.BEST_EFFORT, depth)
    if mode == "sensor_data":
        # As rclpy's qos_profile_sensor_data: best effort, keep last 5, volatile.
        return profile_for(ReliabilityPolicy.BEST_EFFORT, 5)
    raise ValueError(f"unknown qos mode '{mode}' (choose one of {', '.join(QOS_MODES)})")


def reliability_for_publishers(offered: list[ReliabilityPolicy]) -> ReliabilityPolicy:
    """Reliability to request given the publishers' offered reliabilities.

    All reliable (or no publisher yet) -> reliable, which is the only kind that gets large
    images across processes with default Fast DDS settings. Any best-effort publisher ->
    best effort, because a reliable reader would not match it.
    """
    if any(r == ReliabilityPolicy.BEST_EFFORT for r in offered):
        return ReliabilityPolicy.BEST_EFFORT
    return ReliabilityPolicy.RELIABLE


def offered_reliabilities(node, topic: str) -> list[ReliabilityPolicy]:
    """Reliability of every publisher currently on ``topic`` (fully resolved name)."""
    return [info.qos_profile.reliability for info in node.get_publishers_info_by_topic(topic)]
