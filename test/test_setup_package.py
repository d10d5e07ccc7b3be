"""Packaging and set-up: package.xml, CMakeLists.txt, setup.py, requirements.txt, scripts/setup.sh, .ci/run."""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

from paths import REPO_ROOT, VENV_PYTHON


def test_package_xml_is_a_valid_format3_ament_cmake_interface_package():
    package = parse_package(str(REPO_ROOT / "package.xml"))
    package.validate()  # raises InvalidPackage with the reason
    assert package.name == "mixformer_ros"
    assert package.package_format == 3
    assert package.get_build_type() == "ament_cmake"
    assert [group.name for group in package.member_of_groups] == ["rosidl_interface_packages"]
    assert {"builtin_interfaces", "std_msgs", "sensor_msgs"} <= {d.name for d in package.build_depends}
    exec_depends = {d.name for d in package.exec_depends}
    for name in ("rclpy", "vision_msgs", "std_srvs", "diagnostic_msgs", "lifecycle_msgs", "launch", "launch_ros"):
        assert name in exec_depends, name


def test_compat_vision_msgs_package_is_valid_and_hidden_from_colcon():
    package = parse_package(str(REPO_ROOT / "compat" / "vision_msgs" / "package.xml"))
    package.validate()
    assert package.name == "vision_msgs" and package.version.startswith("4.")
    assert (REPO_ROOT / "compat" / "COLCON_IGNORE").is_file()


def test_cmake_generates_every_interface_file_in_the_repository():
    cmake = (REPO_ROOT / "CMakeLists.txt").read_text()
    listed = set(re.findall(r'"((?:msg|srv|action)/[A-Za-z0-9]+\.(?:msg|srv|action))"', cmake))
    on_disk = {str(p.relative_to(REPO_ROOT)) for kind in ("msg", "srv", "action") for p in (REPO_ROOT / kind).glob(f"*.{kind}")}
    assert on_disk and listed == on_disk


def test_compat_cmake_generates_every_vision_msgs_file():
    root = REPO_ROOT / "compat" / "vision_msgs"
    listed = set(re.findall(r'"(msg/[A-Za-z0-9]+\.msg)"', (root / "CMakeLists.txt").read_text()))
    assert listed == {str(p.relative_to(root)) for p in (root / "msg").glob("*.msg")}


def test_torch_is_pinned_and_installed_at_that_version():
    requirements = (REPO_ROOT / "requirements.txt").read_text().splitlines()
    torch_lines = [line.split("#")[0].strip() for line in requirements if re.match(r"\s*torch\b", line)]
    assert torch_lines == ["torch==2.13.0"]
    assert importlib.metadata.version("torch").split("+")[0] == "2.13.0"


def test_exactly_one_opencv_build_and_it_has_the_contrib_trackers():
    installed = set()
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith("opencv"):
            installed.add(name)
    assert installed == {"opencv-contrib-python-headless"}
    cv2 = importlib.import_module("cv2")
    for factory in ("TrackerCSRT_create", "TrackerKCF_create", "TrackerNano_create"):
        assert hasattr(cv2, factory), factory


def test_console_script_targets_exist():
    """Every console script setup.py declares points at an importable callable."""
    text = (REPO_ROOT / "setup.py").read_text()
    targets = re.findall(r'"([\w-]+) = ([\w.]+):(\w+)"', text)
    assert targets, "setup.py declares no console scripts"
    for script, module, function in targets:
        spec = importlib.util.find_spec(module)
        assert spec is not None and spec.origin is not None, f"{script}: module {module} not found"
        assert Path(spec.origin).is_relative_to(REPO_ROOT / "mixformer_ros"), spec.origin
        source = Path(spec.origin).read_text()
        assert re.search(rf"^def {function}\(", source, re.MULTILINE), f"{script}: no {function}() in {module}"


def test_pip_wheel_holds_the_whole_python_package(tmp_path):
    """`pip install .` for non-ROS users: the wheel carries every source and data file and the scripts."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy2(REPO_ROOT / "setup.py", src)
    shutil.copy2(REPO_ROOT / "package.xml", src)
    shutil.copytree(REPO_ROOT / "mixformer_ros", src / "mixformer_ros", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(REPO_ROOT / "models", src / "models")
    result = subprocess.run(
        [str(VENV_PYTHON), "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("mixformer_ros-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    shipped = {
        str(p.relative_to(src))
        for p in (src / "mixformer_ros").rglob("*")
        if p.is_file()
    }
    assert shipped - names == set(), f"files missing from the wheel: {sorted(shipped - names)}"
    # The demo model goes where mixformer_ros.demo looks in an install: <prefix>/share/mixformer_ros/models.
    assert any(n.endswith(".data/data/share/mixformer_ros/models/demo_tracker.pth.tar") for n in names)
    assert "mixformer-tracker-node = mixformer_ros.tracker_node:main" in entry_points


def run_setup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "setup.sh"), *args], capture_output=True, text=True, timeout=900
    )


def test_setup_script_rerun_skips_the_work_already_done():
    run_setup()  # brings everything up to date if a file changed since this run's set-up
    result = run_setup()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[setup] python dependencies: up to date" in result.stdout
    assert re.search(r"\[setup\] vision_msgs.*(up to date|using the installed one)", result.stdout)
    # While people edit the working tree the package may legitimately rebuild; it must say which.
    assert re.search(
        r"\[setup\] (mixformer_ros \(interfaces \+ python package\): up to date|  mixformer_ros built and installed)",
        result.stdout,
    ), result.stdout


def test_setup_script_rejects_unknown_arguments():
    result = run_setup("--frobnicate")
    assert result.returncode != 0
    assert "unknown argument '--frobnicate'" in result.stderr


@pytest.mark.parametrize(("test_exit", "ci_exit", "message"), [(0, 0, None), (1, 1, None), (5, 1, "collected no tests")])
def test_ci_entry_point_passes_failures_on_and_refuses_an_empty_run(tmp_path, test_exit, ci_exit, message):
    """.ci/run with a stand-in scripts/test.sh: exit codes pass through, pytest's 5 (no tests) fails."""
    (tmp_path / ".ci").mkdir()
    (tmp_path / "scripts").mkdir()
    shutil.copy2(REPO_ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "scripts" / "test.sh").write_text(f"exit {test_exit}\n")
    result = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], capture_output=True, text=True, timeout=60)
    assert result.returncode == ci_exit
    if message:
        assert message in result.stderr
    assert (REPO_ROOT / ".ci" / "run").read_text().count("bash scripts/test.sh") == 1


def test_installed_launcher_starts_the_installed_node(ros_env):
    """`ros2 run mixformer_ros tracker_node` runs lib/mixformer_ros/tracker_node: it reaches the node's main()
    from the venv install (not the working tree), which refuses a missing checkpoint with exit code 1."""
    venv = VENV_PYTHON.parent.parent
    launcher = venv / "lib" / "mixformer_ros" / "tracker_node"
    console_script = venv / "bin" / "mixformer-tracker-node"
    for path in (launcher, console_script):
        assert path.is_file() and path.stat().st_mode & 0o111, path
        assert path.read_text().startswith(f"#!{VENV_PYTHON}\n"), path
    env = ros_env(16)
    env.pop("PYTHONPATH")  # cwd=/ and no PYTHONPATH: only what setup.sh installed is importable
    result = subprocess.run(
        [str(launcher), "--ros-args", "-p", "checkpoint:=/nonexistent/model.pth.tar"],
        cwd="/", env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "/nonexistent/model.pth.tar" in result.stdout + result.stderr
