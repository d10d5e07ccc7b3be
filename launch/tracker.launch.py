"""Start the MixFormerV2 tracker node (and optionally rviz2 showing its debug image).

    ros2 launch mixformer_ros tracker.launch.py image_topic:=/camera/image_raw \
        checkpoint:=/path/to/mixformerv2_small.pth.tar
    ros2 launch mixformer_ros tracker.launch.py variant:=B checkpoint:=/path/to/mixformerv2_base.pth.tar

Values come from ``params_file`` first (by default the shipped file for the variant: B on the GPU,
otherwise S on the CPU); the variant, backend, device, precision, checkpoint and compressed
arguments override it only when given (their empty default means "as in the params file").
Uses the launch / launch_ros Python API of Jazzy and Kilted.
"""

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from mixformer_ros.ros.launch_config import params_file_for, rviz_config_for

PACKAGE = "mixformer_ros"

# Launch arguments that are passed on as node parameters of the same name when not empty.
NODE_PARAMETER_ARGUMENTS = ("variant", "backend", "device", "precision", "checkpoint", "compressed")


def _declare_arguments(share_dir):
    return [
        DeclareLaunchArgument(
            "params_file",
            default_value="",
            description="YAML file with the node's parameters; empty = config/mixformerv2_b_gpu.yaml "
                        "for variant:=B, else config/mixformerv2_s_cpu.yaml",
        ),
        DeclareLaunchArgument(
            "variant",
            default_value="",
            choices=["", "S", "B", "auto"],
            description="MixFormerV2 variant, S (CPU), B (GPU) or auto (from the checkpoint); empty = from params_file",
        ),
        DeclareLaunchArgument(
            "backend",
            default_value="",
            choices=["", "torch", "onnxruntime"],
            description="Inference backend; empty = from params_file",
        ),
        DeclareLaunchArgument(
            "device",
            default_value="",
            description="Inference device: cpu, cuda or cuda:N; empty = from params_file",
        ),
        DeclareLaunchArgument(
            "precision",
            default_value="",
            choices=["", "fp32", "bf16", "fp16", "int8"],
            description="Arithmetic: fp32, bf16 (torch), fp16 (CUDA) or int8 (onnxruntime, CPU); empty = from params_file",
        ),
        DeclareLaunchArgument(
            "checkpoint",
            default_value="",
            description="Path to the MixFormerV2 checkpoint (.pth.tar); empty = from params_file",
        ),
        DeclareLaunchArgument(
            "image_topic",
            default_value="/camera/image_raw",
            description="Camera image topic; with compressed:=true the node reads <image_topic>/compressed",
        ),
        DeclareLaunchArgument(
            "compressed",
            default_value="",
            choices=["", "true", "false"],
            description="Subscribe to the JPEG/PNG compressed image instead of the raw one; empty = from params_file",
        ),
        DeclareLaunchArgument(
            "namespace",
            default_value="",
            description="Namespace of the tracker node (topics become <namespace>/mixformer_tracker/...)",
        ),
        DeclareLaunchArgument(
            "use_sim_time",
            default_value="",
            choices=["", "true", "false"],
            description="Use the /clock topic (e.g. when replaying a bag); empty = from params_file (else false)",
        ),
        DeclareLaunchArgument(
            "rviz",
            default_value="false",
            choices=["true", "false"],
            description="Also start rviz2 showing the annotated ~/debug_image",
        ),
    ]


def _launch_setup(context, share_dir):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {}
    for name in NODE_PARAMETER_ARGUMENTS + ("use_sim_time",):
        value = arg(name)
        if value:
            overrides[name] = (value == "true") if name in ("compressed", "use_sim_time") else value
    if arg("rviz") == "true":
        overrides["publish_debug_image"] = True  # what the rviz display shows

    image_topic = arg("image_topic")
    actions = [
        Node(
            package=PACKAGE,
            executable="tracker_node",
            name="mixformer_tracker",
            namespace=arg("namespace"),
            parameters=[arg("params_file") or params_file_for(share_dir, arg("variant")), overrides],
            remappings=[("image", image_topic), ("image/compressed", image_topic + "/compressed")],
            output="screen",
            emulate_tty=True,
        )
    ]
    if arg("rviz") == "true":
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="mixformer_rviz",
                arguments=["-d", rviz_config_for(share_dir, arg("namespace"), image_topic)],
                parameters=[{"use_sim_time": overrides.get("use_sim_time", False)}],
                output="screen",
            )
        )
    return actions


def generate_launch_description():
    share_dir = get_package_share_directory(PACKAGE)
    return LaunchDescription(
        _declare_arguments(share_dir) + [OpaqueFunction(function=_launch_setup, args=[share_dir])]
    )
