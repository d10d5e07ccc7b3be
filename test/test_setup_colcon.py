"""The ROS user's path: `colcon build` of this repository in a workspace over the venv's ROS prefix.

Checks that colcon sees one ament_cmake package (compat/ stays hidden), that the build installs the
interfaces, our Python package (our __init__.py, not the generated one), launch/config files and
the launchers, and that a fresh shell that sources install/setup.sh imports everything from there.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from paths import REPO_ROOT, VENV_PYTHON

VENV = VENV_PYTHON.parent.parent


def colcon_env() -> dict[str, str]:
    """The environment of an activated venv used as the ROS underlay, without the repo on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "COLCON_PREFIX_PATH")}
    env["VIRTUAL_ENV"] = str(VENV)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["AMENT_PREFIX_PATH"] = str(VENV)
    env["CMAKE_PREFIX_PATH"] = str(VENV)
    return env


def run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=colcon_env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A colcon workspace with the repository linked into src/, built once for this file."""
    if shutil.which("colcon", path=str(VENV / "bin")) is None:
        pytest.fail(f"colcon is not installed in {VENV}; run scripts/setup.sh")
    ws = tmp_path_factory.mktemp("colcon_ws")
    (ws / "src").mkdir()
    (ws / "src" / "mixformer_ros").symlink_to(REPO_ROOT, target_is_directory=True)
    run(
        [
            str(VENV / "bin" / "colcon"), "build", "--event-handlers", "console_direct-",
            "--cmake-args", f"-DPython3_EXECUTABLE={VENV_PYTHON}", "-DBUILD_TESTING=OFF",
        ],
        cwd=ws,
        timeout=600,
    )
    return ws


def in_sourced_workspace(ws: Path, python_code: str) -> str:
    """Runs python code in a shell that sourced the workspace, from a neutral directory."""
    script = f'. "{ws}/install/setup.sh" && cd / && python -c "$PYCODE"'
    env = colcon_env()
    env["PYCODE"] = python_code
    result = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_colcon_sees_one_ament_cmake_package(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "mixformer_ros").symlink_to(REPO_ROOT, target_is_directory=True)
    listing = run([str(VENV / "bin" / "colcon"), "list"], cwd=tmp_path).stdout.split("\n")
    packages = [line.split("\t") for line in listing if line.strip()]
    assert packages == [["mixformer_ros", "src/mixformer_ros", "(ros.ament_cmake)"]]


def test_install_tree_has_interfaces_launchers_and_share_files(workspace):
    prefix = workspace / "install" / "mixformer_ros"
    site = prefix / "lib" / "python3.11" / "site-packages" / "mixformer_ros"
    assert (site / "msg" / "_tracker_status.py").is_file()
    assert (site / "srv" / "_init_tracker.py").is_file()
    # Our __init__.py replaced the empty generated one.
    assert (site / "__init__.py").read_text() == (REPO_ROOT / "mixformer_ros" / "__init__.py").read_text()
    share = prefix / "share" / "mixformer_ros"
    assert (share / "package.xml").read_text() == (REPO_ROOT / "package.xml").read_text()
    assert (share / "msg" / "TrackerStatus.msg").is_file() and (share / "srv" / "InitTracker.srv").is_file()
    assert (share / "models" / "demo_tracker.pth.tar").read_bytes() == (REPO_ROOT / "models" / "demo_tracker.pth.tar").read_bytes()
    for folder in ("launch", "config"):
        shipped = sorted(p.name for p in (REPO_ROOT / folder).iterdir() if p.name != ".gitkeep")
        installed = sorted(p.name for p in (share / folder).iterdir())
        assert installed == shipped, folder
    for launcher in (prefix / "lib" / "mixformer_ros" / "tracker_node", prefix / "bin" / "mixformer-tracker-node"):
        assert os.access(launcher, os.X_OK), launcher
        text = launcher.read_text()
        assert text.startswith(f"#!{VENV_PYTHON}\n")
        assert "from mixformer_ros.tracker_node import main" in text


def test_sourced_workspace_imports_from_the_install_tree(workspace):
    out = in_sourced_workspace(
        workspace,
        "import mixformer_ros\n"
        "from mixformer_ros.msg import TrackerStatus\n"
        "from mixformer_ros.srv import InitTracker\n"
        "from vision_msgs.msg import Detection2D\n"
        "from ament_index_python.packages import get_package_share_directory\n"
        "from mixformer_ros.demo import default_checkpoint\n"
        "print(mixformer_ros.__file__)\n"
        "print(TrackerStatus.__module__, list(InitTracker.Request.get_fields_and_field_types()))\n"
        "print(get_package_share_directory('mixformer_ros'))\n"
        "print(default_checkpoint())\n",
    )
    package_file, types_line, share_dir, demo_model = out.strip().split("\n")
    install = str(workspace / "install" / "mixformer_ros")
    assert package_file.startswith(install), package_file
    assert types_line == "mixformer_ros.msg._tracker_status ['roi', 'stamp', 'label']"
    assert share_dir == f"{install}/share/mixformer_ros"
    # The installed demo finds the shipped model in the workspace, not in a source tree.
    assert demo_model == f"{share_dir}/models/demo_tracker.pth.tar"
