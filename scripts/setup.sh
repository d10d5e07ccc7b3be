#!/usr/bin/env bash
# Sets up everything mixformer_ros needs for development, tests and CI, in one command:
#   .venv/  Python 3.11 virtual environment at the repository root, holding
#           - the Python dependencies of requirements.txt (torch, ONNX Runtime, OpenCV, ...)
#           - ROS 2 Kilted from PyPI wheels (rclpy with Fast DDS, message packages, rosidl tooling)
#           - vision_msgs built from compat/vision_msgs, only when no vision_msgs is importable
#           - this package (interfaces, Python package, launchers) built and installed with CMake
# Re-running is cheap: each step keeps a content hash under .venv/.setup/ and is skipped while
# its inputs are unchanged. Usage: scripts/setup.sh [--force]   (--force redoes every step)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
STAMPS="$VENV/.setup"
BUILD_ROOT="$VENV/build"
FORCE=0

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$arg' (try --help)" ;;
  esac
done

# Hash of the given files/folders (paths and contents), ignoring Python caches.
content_hash() {
  (cd "$REPO_ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 \
    | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}
stamp_matches() { [[ $FORCE -eq 0 && -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }
write_stamp() { mkdir -p "$STAMPS"; printf '%s\n' "$2" > "$STAMPS/$1"; }

# Runs a command with its output in a log file; on failure shows the log's tail and stops.
run_logged() {
  local name="$1"; shift
  local logfile="$BUILD_ROOT/logs/$name.log"
  mkdir -p "$(dirname "$logfile")"
  if ! "$@" >"$logfile" 2>&1; then
    grep -v 'is ignored: it is neither a file nor a directory' "$logfile" | tail -n 40 >&2 || true
    die "step '$name' failed (full log: $logfile)"
  fi
}

# --- 1. Python 3.11 and the virtual environment ------------------------------------------------
# The ROS 2 wheels on PyPI are built for CPython 3.11 only.
find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.11 python3; do
    [[ -n "$candidate" ]] || continue
    if command -v "$candidate" >/dev/null 2>&1 \
      && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

# A venv left by a failed `python -m venv` (no pip) or made with another Python is made again.
if [[ ! -x "$VENV/bin/python" ]] \
  || ! "$VENV/bin/python" -c 'import sys, pip; sys.exit(sys.version_info[:2] != (3, 11))' >/dev/null 2>&1; then
  BASE_PYTHON="$(find_python)" || die "Python 3.11 not found (the ROS 2 wheels need CPython 3.11); set PYTHON=/path/to/python3.11"
  [[ -e "$VENV" ]] && log "$VENV has no pip or is not Python 3.11: making it again"
  log "creating virtual environment $VENV with $BASE_PYTHON"
  rm -rf "$VENV"
  "$BASE_PYTHON" -m venv "$VENV" || die "could not create $VENV (on Debian: apt-get install python3.11-venv)"
  "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || die "$VENV is not Python 3.11; remove it and re-run"
fi
PY="$VENV/bin/python"
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
# A system ROS sourced in this shell must not leak into the venv's builds: its Python paths are
# another interpreter's, its prefixes another ROS's.
unset PYTHONHOME PYTHONPATH AMENT_PREFIX_PATH CMAKE_PREFIX_PATH

for tool in cmake make c++; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found; building the interfaces needs CMake and a C/C++ toolchain (Debian: apt-get install cmake build-essential)"
done

# --- 2. Python dependencies ----------------------------------------------------------------------
PIP_HASH="$( (cat "$REPO_ROOT/requirements.txt"; "$PY" -VV) | sha256sum | cut -d' ' -f1)"
if stamp_matches pip "$PIP_HASH"; then
  log "python dependencies: up to date"
else
  log "installing python dependencies from requirements.txt (a minute or so on a new venv)"
  run_logged pip-upgrade "$PY" -m pip install --quiet --upgrade pip
  run_logged pip-install "$PY" -m pip install --quiet -r "$REPO_ROOT/requirements.txt"
  # All OpenCV wheels own the same cv2/ folder; if a dependency pulled in another build, remove
  # it and restore the contrib files it overwrote (CSRT/KCF/TrackerNano need contrib).
  for clash in opencv-python-headless opencv-python opencv-contrib-python; do
    if "$PY" -m pip show --quiet "$clash" >/dev/null 2>&1; then
      log "removing $clash (clashes with opencv-contrib-python-headless)"
      run_logged "pip-remove-$clash" "$PY" -m pip uninstall --yes "$clash"
    fi
  done
  # Also after a removal that an earlier run did not finish restoring from.
  opencv_contrib_works() { "$PY" -c 'import cv2; cv2.TrackerCSRT.create' >/dev/null 2>&1; }
  if ! opencv_contrib_works; then
    log "restoring opencv-contrib-python-headless"
    run_logged pip-opencv-restore "$PY" -m pip install --quiet --force-reinstall --no-deps \
      "$(grep -E '^opencv-contrib-python-headless' "$REPO_ROOT/requirements.txt" | cut -d'#' -f1 | tr -d ' ')"
    opencv_contrib_works || die "OpenCV with the contrib trackers does not import in $VENV"
  fi
  "$PY" -c 'import torch, sys; sys.exit(not torch.__version__.startswith("2.13.0"))' \
    || die "torch is not 2.13.0 in $VENV; something pulled another torch (check requirements.txt)"
  write_stamp pip "$PIP_HASH"
fi

# --- 3. CMake path fix for the ROS wheels ------------------------------------------------------------
# The wheels' exported CMake targets name the include folders of the machine that built them;
# point them at this interpreter's, or CMake refuses the imported targets.
PY_INCLUDE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NP_INCLUDE="$("$PY" -c 'import numpy; print(numpy.get_include())')"
mapfile -t stale_cmake < <(grep -rlF --include='*.cmake' -e '/opt/python/cp311-cp311/' "$VENV/share" 2>/dev/null || true)
if ((${#stale_cmake[@]})); then
  log "fixing include paths in ${#stale_cmake[@]} CMake files of the ROS wheels"
  sed -i \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NP_INCLUDE#g" \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$PY_INCLUDE#g" \
    "${stale_cmake[@]}"
fi
[[ -d "$PY_INCLUDE" ]] || die "Python headers not found at $PY_INCLUDE (Debian: apt-get install python3.11-dev)"

# Configures, builds and installs one CMake package into the venv prefix.
cmake_install() {
  local name="$1" src="$2" build="$BUILD_ROOT/$1" start=$SECONDS
  run_logged "$name-configure" cmake -S "$src" -B "$build" \
    -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release
  run_logged "$name-build" cmake --build "$build" -j "$(nproc)"
  run_logged "$name-install" cmake --install "$build"
  log "  $name built and installed ($((SECONDS - start))s)"
}
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

# --- 4. vision_msgs (compat) ---------------------------------------------------------------------
# Not on PyPI; build our 4.x-compatible copy unless a vision_msgs is already importable (e.g. a
# sourced ROS installation). Rebuild our copy when its sources change.
# Both interface builds depend on the ROS wheels too: new requirements rebuild them.
VISION_HASH="$(content_hash compat/vision_msgs)-$PIP_HASH"
if [[ -f "$STAMPS/vision_msgs" ]] && stamp_matches vision_msgs "$VISION_HASH" \
  && "$PY" -c 'import vision_msgs.msg' >/dev/null 2>&1; then
  log "vision_msgs (compat): up to date"
elif [[ ! -f "$STAMPS/vision_msgs" ]] && "$PY" -c 'import vision_msgs.msg' >/dev/null 2>&1; then
  log "vision_msgs: using the installed one ($("$PY" -c 'import vision_msgs; print(vision_msgs.__path__[0])'))"
else
  log "building vision_msgs from compat/vision_msgs (vision_msgs is not on PyPI)"
  cmake_install vision_msgs "$REPO_ROOT/compat/vision_msgs"
  "$PY" -c 'from vision_msgs.msg import Detection2D' >/dev/null 2>&1 \
    || die "vision_msgs was built but 'from vision_msgs.msg import Detection2D' fails"
  write_stamp vision_msgs "$VISION_HASH"
fi

# --- 5. mixformer_ros ------------------------------------------------------------------------------
PKG_HASH="$(content_hash CMakeLists.txt package.xml msg srv mixformer_ros launch config models)-$PIP_HASH"
if stamp_matches mixformer_ros "$PKG_HASH" && [[ -d "$SITE/mixformer_ros/msg" ]]; then
  log "mixformer_ros (interfaces + python package): up to date"
else
  log "building mixformer_ros (interfaces, python package, launchers) into $VENV"
  # Start from an empty install folder so files deleted from the repository don't linger.
  rm -rf "$SITE/mixformer_ros"
  cmake_install mixformer_ros "$REPO_ROOT"
  (cd / && "$PY" -c 'from mixformer_ros.msg import TrackerStatus; from mixformer_ros.srv import InitTracker') \
    || die "mixformer_ros was built but its interfaces do not import"
  write_stamp mixformer_ros "$PKG_HASH"
fi

log "done in ${SECONDS}s: use $PY (or 'source .venv/bin/activate')"
