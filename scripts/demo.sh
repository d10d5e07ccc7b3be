#!/usr/bin/env bash
# The mixformer_ros demo in one command: sets up the environment (scripts/setup.sh), starts the
# tracker node in its own process, plays a procedural clip (or your video/camera) to it over
# ROS 2, and writes outputs/demo_tracking.mp4 (or .avi) and outputs/demo_summary.json.
#   bash scripts/demo.sh                                   # bundled procedural clip
#   bash scripts/demo.sh --source my.mp4 --init-box 100,80,60,40
#   bash scripts/demo.sh --help                            # all options
# Uses models/demo_tracker.pth.tar when it exists; otherwise says loudly that the weights are untrained.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$REPO_ROOT/scripts/setup.sh"
# Run from the caller's folder, so relative --source/--checkpoint/--output-dir paths mean what they say.
# PYTHONPATH is replaced, not extended: a sourced system ROS puts its own rclpy (another Python) there.
PYTHONPATH="$REPO_ROOT" exec "$REPO_ROOT/.venv/bin/python" -m mixformer_ros.demo "$@"
