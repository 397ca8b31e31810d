"""Training, evaluation and data tooling for avsnet_ros (not installed with the ROS package)."""
