"""ROS 2 nodes (rclpy only; the math lives in the library): chirp_emitter, depth_node, replay_source,
the avsnet-launch entry point (launcher) and the listener used by the demo and the replay
evaluation (collector). See docs/ARCHITECTURE.md "Nodes" and the module docstrings."""
import os as _os

# Bounded OpenMP spin-waiting for every process that runs a node (read once, when torch loads
# libgomp, so it must be set before the first `import torch`; no effect if torch is already loaded,
# and a value the user exported wins). GNU OpenMP's default spins its idle workers for a long time;
# in a node process the DDS receive/publish threads and the executor share the cores with the torch
# team, and a spinning worker that holds a core stalls a whole parallel region: measured on 2 cores
# (bench/bench_node.py, 15 frames), per-frame latency with the default spin had outliers of
# 0.3-2.4 s (median 89-110 ms); with 100,000 spins 83-92 ms and p90 <= 113 ms; fully passive
# (OMP_WAIT_POLICY=PASSIVE) no outliers but 115-124 ms.
_os.environ.setdefault("GOMP_SPINCOUNT", "100000")

# Camera-sized messages between processes: Fast DDS's 512 KiB shared-memory segment loses most 2.7 MB
# frames (see transport.py). Applied before any participant exists; a user's own choice wins.
from avsnet_ros.nodes.transport import configure_camera_transport as _configure_camera_transport  # noqa: E402

_configure_camera_transport()
