"""Training toolkit for MixFormerV2: data, losses, distillation stages and the trainer.

Entry point: ``python -m mixformer_ros.training.cli --help``. No ROS imports here.
"""
