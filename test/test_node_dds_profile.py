"""Which Fast DDS profile and OpenMP spin limit the node applies before rclpy.init and torch (decisions
only; DDS is in test_node_qos.py)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from mixformer_ros.tracker_node import (
    DEFAULT_PROFILE,
    LOCALHOST_PROFILE,
    OPENMP_SPIN_COUNT,
    apply_dds_profile,
    limit_openmp_spinning,
)


def test_default_discovery_gets_the_large_image_profile():
    env = {}
    assert apply_dds_profile(env) == str(DEFAULT_PROFILE)
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == str(DEFAULT_PROFILE)
    assert "ROS_AUTOMATIC_DISCOVERY_RANGE" not in env


def test_localhost_discovery_gets_the_loopback_profile_and_rmw_keeps_out():
    env = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    assert apply_dds_profile(env) == str(LOCALHOST_PROFILE)
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SYSTEM_DEFAULT"
    env = {"ROS_LOCALHOST_ONLY": "1"}
    assert apply_dds_profile(env) == str(LOCALHOST_PROFILE)
    assert "ROS_LOCALHOST_ONLY" not in env


def test_user_configuration_is_left_alone():
    for env in (
        {"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my.xml"},
        {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/my.xml"},
        {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"},
        {"MIXFORMER_DDS_PROFILE": "none"},
        {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"},
        {"ROS_AUTOMATIC_DISCOVERY_RANGE": "OFF"},
    ):
        before = dict(env)
        assert apply_dds_profile(env) is None
        assert env == before


def test_explicit_profile_file_is_used(tmp_path):
    mine = tmp_path / "mine.xml"
    mine.write_text("<dds/>")
    env = {"MIXFORMER_DDS_PROFILE": str(mine), "FASTDDS_DEFAULT_PROFILES_FILE": "/etc/other.xml"}
    assert apply_dds_profile(env) == str(mine)
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == str(mine)
    assert apply_dds_profile({"MIXFORMER_DDS_PROFILE": str(tmp_path / "missing.xml")}) is None


def test_shipped_profiles_are_valid_xml_with_a_large_receive_buffer():
    ns = {"d": "http://www.eprosima.com"}
    for path in (DEFAULT_PROFILE, LOCALHOST_PROFILE):
        root = ET.parse(path).getroot()
        sizes = [int(e.text) for e in root.iterfind(".//d:receiveBufferSize", ns)]
        assert sizes and min(sizes) >= 4 * 1024 * 1024
        assert root.find(".//d:participant[@is_default_profile='true']", ns) is not None


def test_openmp_spinning_is_bounded_unless_the_user_chose_a_policy():
    env = {}
    assert limit_openmp_spinning(env) == OPENMP_SPIN_COUNT and env["GOMP_SPINCOUNT"] == OPENMP_SPIN_COUNT
    for chosen in ({"GOMP_SPINCOUNT": "300000"}, {"OMP_WAIT_POLICY": "PASSIVE"}):
        env = dict(chosen)
        assert limit_openmp_spinning(env) is None and env == chosen
