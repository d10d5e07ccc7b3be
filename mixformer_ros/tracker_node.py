"""Entry point of the ``tracker_node`` executable (node name ``mixformer_tracker``).

    python -m mixformer_ros.tracker_node --ros-args -p checkpoint:=model.pth.tar -r image:=/camera/image_raw

The node configures and activates itself unless ``autostart:=false`` (then drive it with
lifecycle transitions). A model that cannot be loaded, or a parameter outside its range or of the
wrong type, ends the process with exit code 1.

Before ROS starts, this sets a Fast DDS profile that lets frames from best-effort cameras in
other processes through (see mixformer_ros/ros/fastdds_large_images.xml and docs/node.md).
Set MIXFORMER_DDS_PROFILE=none to keep Fast DDS defaults, or to a file of your own.
It also bounds how long PyTorch's idle OpenMP workers spin (see ``limit_openmp_spinning``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

PROFILE_ENV = "MIXFORMER_DDS_PROFILE"
_PROFILE_DIR = Path(__file__).resolve().parent / "ros"
DEFAULT_PROFILE = _PROFILE_DIR / "fastdds_large_images.xml"
LOCALHOST_PROFILE = _PROFILE_DIR / "fastdds_large_images_localhost.xml"


def apply_dds_profile(environ=os.environ) -> str | None:
    """Point Fast DDS at our participant profile unless the user configured Fast DDS already.

    Must run before rclpy.init(), which creates the DDS participant. Under
    ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, rmw_fastrtps would override the profile's
    transports, so the localhost variant takes over that job and rmw is told to leave the
    participant alone (SYSTEM_DEFAULT); discovery still stays on the loopback interface.
    """
    choice = environ.get(PROFILE_ENV, "")
    if choice.lower() == "none":
        return None
    if environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") not in ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp"):
        return None
    user_config = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")
    if not choice and any(environ.get(k) for k in user_config):
        return None
    discovery = environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").upper()
    if discovery == "OFF":
        return None
    localhost = discovery == "LOCALHOST" or environ.get("ROS_LOCALHOST_ONLY") == "1"
    profile = choice or str(LOCALHOST_PROFILE if localhost else DEFAULT_PROFILE)
    if not Path(profile).is_file():
        logging.getLogger(__name__).warning("Fast DDS profile %s not found; keeping Fast DDS defaults", profile)
        return None
    if localhost:
        environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SYSTEM_DEFAULT"
        environ.pop("ROS_LOCALHOST_ONLY", None)
    environ["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    return profile


# libgomp's spin count before an idle OpenMP worker sleeps: about a millisecond here instead of the
# default's tens of milliseconds.
OPENMP_SPIN_COUNT = "20000"


def limit_openmp_spinning(environ=os.environ) -> str | None:
    """Let PyTorch's idle OpenMP workers sleep soon after a frame, unless the user chose a policy.

    Between the many parallel regions of one frame the workers must spin (sleeping and waking
    costs more), but after the frame they kept a core busy for tens of milliseconds, while the
    DDS threads needed it to take in the next 921 kB image: on a 2-core machine lockstep latency
    had p99 230-280 ms tails. With this limit: p99 51 ms, p50 unchanged (docs/node.md, Latency).
    Must run before torch is imported (libgomp reads it once).
    """
    if environ.get("GOMP_SPINCOUNT") or environ.get("OMP_WAIT_POLICY"):
        return None
    environ["GOMP_SPINCOUNT"] = OPENMP_SPIN_COUNT
    return OPENMP_SPIN_COUNT


def main(args: list[str] | None = None) -> int:
    profile = apply_dds_profile()
    limit_openmp_spinning()

    import rclpy
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
    from rclpy.executors import ExternalShutdownException
    from rclpy.lifecycle import TransitionCallbackReturn

    from mixformer_ros.ros.node import TrackerNode, spin_node

    # Library code logs through `logging` (model loading, untrained-weight warnings).
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    # rclpy's own handlers take SIGINT and SIGTERM (docker stop, launch's escalation) alike: they wake
    # the executor even while it waits with nothing to do (an unconfigured node), which a Python
    # handler, run only between bytecodes, cannot.
    rclpy.init(args=args if args is not None else sys.argv)
    try:
        node = TrackerNode()
    except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
        # An override outside its declared range or of the wrong type (-p search_factor:=20.0).
        logging.getLogger("mixformer_tracker").error("bad parameter: %s", exc)
        rclpy.try_shutdown()
        return 1
    if profile:
        node.get_logger().info(f"Fast DDS profile: {profile}")
    try:
        if node.settings.autostart:
            for transition in (node.trigger_configure, node.trigger_activate):
                if transition() != TransitionCallbackReturn.SUCCESS:
                    if not rclpy.ok():  # Ctrl-C/SIGTERM while the model loaded: a requested exit
                        return 0
                    node.get_logger().error(f"{transition.__name__[len('trigger_'):]} failed; exiting "
                                            "(see the error above)")
                    return 1
        spin_node(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # A callback caught half way by the shutdown (its publisher already destroyed): the exit
        # that was asked for, not a failure.
    finally:
        node.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
