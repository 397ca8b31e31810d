"""avsnet_ros: AVS-Net audio-visual metric depth (runtime library and ROS 2 nodes)."""
__version__ = "0.1.0"
