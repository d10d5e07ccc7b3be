"""The launch file and the YAML configs agree with the node (launch_ros is not installable here).

The launch file is checked statically (it parses, declares every documented argument with a
description, and passes only parameters the node declares); each config file's keys are node
parameters, and the S/CPU config starts a real node through the installed ``tracker_node``
launcher with the same remapping the launch file applies.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from mixformer_ros.ros.launch_config import params_file_for, rviz_config_for
from mixformer_ros.ros.parameters import PARAMETER_NAMES, PARAMETERS
from node_harness import Client, NodeProcess, wait_until
from paths import REPO_ROOT, VENV_PYTHON

LAUNCH_FILE = REPO_ROOT / "launch" / "tracker.launch.py"
CONFIGS = [REPO_ROOT / "config" / "mixformerv2_s_cpu.yaml", REPO_ROOT / "config" / "mixformerv2_b_gpu.yaml"]
EXPECTED_ARGUMENTS = {
    "variant", "backend", "device", "precision", "checkpoint", "image_topic", "compressed",
    "namespace", "use_sim_time", "params_file", "rviz",
}
DOMAIN = 45


def _launch_tree():
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def _declared_arguments():
    """name -> {keyword: literal or None} for every DeclareLaunchArgument(...) call."""
    found = {}
    for node in ast.walk(_launch_tree()):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument":
            name = ast.literal_eval(node.args[0])
            kwargs = {}
            for kw in node.keywords:
                try:
                    kwargs[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    kwargs[kw.arg] = None  # a substitution or a computed path
            found[name] = kwargs
    return found


def test_launch_file_declares_documented_arguments():
    args = _declared_arguments()
    assert set(args) == EXPECTED_ARGUMENTS
    for name, kwargs in args.items():
        assert kwargs.get("description"), f"{name} has no description"
        assert "default_value" in kwargs, f"{name} has no default"
        if kwargs.get("choices") is not None:
            assert kwargs["default_value"] in kwargs["choices"], name
    variant_choices = set(args["variant"]["choices"]) - {""}
    specs = {p.name: p for p in PARAMETERS}
    for name in ("variant", "backend", "precision"):
        assert set(args[name]["choices"]) - {""} == set(specs[name].choices), name


def test_launch_file_passes_only_node_parameters():
    tree = _launch_tree()
    passed = None
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "NODE_PARAMETER_ARGUMENTS" for t in node.targets):
            passed = ast.literal_eval(node.value)
    assert passed, "NODE_PARAMETER_ARGUMENTS not found"
    assert set(passed) <= set(PARAMETER_NAMES)
    assert set(passed) <= EXPECTED_ARGUMENTS
    # The node is started by its installed executable name, under its own node name.
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "Node"]
    tracker = [c for c in calls if any(k.arg == "executable" and ast.literal_eval(k.value) == "tracker_node" for k in c.keywords)]
    assert len(tracker) == 1
    kws = {k.arg: k.value for k in tracker[0].keywords}
    assert ast.literal_eval(kws["name"]) == "mixformer_tracker"
    assert getattr(kws["package"], "id", None) == "PACKAGE"
    package = [n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", None) == "PACKAGE"]
    assert ast.literal_eval(package[0].value) == "mixformer_ros"
    # use_sim_time is the one non-tracker parameter it sets; rclpy declares it on every node.
    assert "use_sim_time" in ast.unparse(tree)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_keys_are_node_parameters(config):
    data = yaml.safe_load(config.read_text())
    params = data["/**"]["ros__parameters"]
    assert set(params) <= set(PARAMETER_NAMES), set(params) - set(PARAMETER_NAMES)
    specs = {p.name: p for p in PARAMETERS}
    for name, value in params.items():
        assert type(value) is type(specs[name].default), f"{name}: {value!r} has the wrong type"
    assert (params["variant"], params["device"]) == (("S", "cpu") if "s_cpu" in config.name else ("B", "cuda"))


def test_search_factor_parameter_accepts_what_the_tracker_accepts():
    from mixformer_ros.tracking.presets import MAX_CROP_FACTOR

    spec = next(p for p in PARAMETERS if p.name == "search_factor")
    assert spec.float_range == (0.0, MAX_CROP_FACTOR)  # 0 = the file's own factor or the preset's


def _rviz_image_topics(path) -> list[str]:
    rviz = yaml.safe_load(Path(path).read_text())
    return [d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"] if d["Class"].endswith("/Image")]


def test_rviz_config_shows_the_debug_image():
    assert "/mixformer_tracker/debug_image" in _rviz_image_topics(REPO_ROOT / "config" / "tracker.rviz")


def test_launch_picks_the_params_file_of_the_variant():
    share = REPO_ROOT  # the installed share dir has the same config/ folder
    assert params_file_for(share, "B") == str(REPO_ROOT / "config" / "mixformerv2_b_gpu.yaml")
    for variant in ("", "S", "auto"):
        assert params_file_for(share, variant) == str(REPO_ROOT / "config" / "mixformerv2_s_cpu.yaml")


def test_rviz_follows_the_namespace_and_the_camera_topic():
    shipped = REPO_ROOT / "config" / "tracker.rviz"
    assert rviz_config_for(REPO_ROOT, "", "/camera/image_raw") == str(shipped)
    moved = rviz_config_for(REPO_ROOT, "drone1/", "/drone1/cam/image")
    assert _rviz_image_topics(moved) == ["/drone1/mixformer_tracker/debug_image", "/drone1/cam/image"]
    shipped_config = yaml.safe_load(shipped.read_text())
    moved_config = yaml.safe_load(Path(moved).read_text())
    for config in (shipped_config, moved_config):  # nothing else changed
        for display in config["Visualization Manager"]["Displays"]:
            display.get("Topic", {}).pop("Value", None)
    assert moved_config == shipped_config


def test_installed_launcher_runs_with_the_cpu_config(tmp_path):
    launcher = VENV_PYTHON.parent.parent / "lib" / "mixformer_ros" / "tracker_node"
    assert launcher.is_file(), "scripts/setup.sh installs lib/mixformer_ros/tracker_node"
    node = NodeProcess(
        DOMAIN,
        {"publish_debug_image": False},
        tmp_path,
        namespace="/launched",
        remap={"image": "/camera/image_raw"},
        params_file=REPO_ROOT / "config" / "mixformerv2_s_cpu.yaml",
        executable=[str(launcher)],
    )
    client = Client(DOMAIN, namespace="/launched")
    try:
        client.wait_for_services()
        # The services come with configure, the subscription with activate just after: wait for
        # discovery to report it rather than asking once.
        wait_until(
            lambda: ("/camera/image_raw", ["sensor_msgs/msg/Image"])
            in client.node.get_subscriber_names_and_types_by_node("mixformer_tracker", "/launched"),
            30, "the node's subscription to /camera/image_raw",
        )
        reply = client.init([0, 0, 10, 10])
        assert not reply.success and "/camera/image_raw" in reply.message
    finally:
        client.close()
        code = node.stop()
        print(node.log())
    assert code == 0
    assert "UNTRAINED" in node.log()  # the shipped config has no checkpoint and says so
