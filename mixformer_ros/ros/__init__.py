"""ROS 2 layer of mixformer_ros: message conversions, QoS choice, frame buffer and the tracker node."""
