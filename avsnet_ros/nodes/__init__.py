"""ROS 2 nodes (rclpy only; the math lives in the library): chirp_emitter, depth_node, replay_source,
the avsnet-launch entry point (launcher) and the listener used by the demo and the replay
evaluation (collector). See docs/ARCHITECTURE.md "Nodes" and the module docstrings."""
