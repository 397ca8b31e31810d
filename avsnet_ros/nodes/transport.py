"""Fast DDS configuration for camera-sized messages between processes (applied on import of
avsnet_ros.nodes, before any ROS participant exists).

Why: Fast DDS's default shared-memory segment is 512 KiB per participant. A 1280x720 camera frame
(2.7 MB) or depth image (3.7 MB) is sent in ~50 fragments; once the segment is full a fragment is
dropped and a best-effort reader (SensorDataQoS, as every camera subscriber) loses the whole sample.
Measured between processes at 4 Hz: 27-36 % of the camera frames reached the depth node, and
nothing counted the loss. The shipped profile (fastdds_camera_profile.xml) keeps the default
transports (shared memory + UDPv4: default-configured processes and other hosts still match) with a
16 MiB segment; bench/bench_delivery.py measures the delivery.

Never overrides a choice the user made: nothing is changed when FASTDDS_DEFAULT_PROFILES_FILE,
FASTRTPS_DEFAULT_PROFILES_FILE or FASTDDS_BUILTIN_TRANSPORTS is set, when a
DEFAULT_FASTDDS_PROFILES.xml lies in the working directory (Fast DDS loads that one itself), when
RMW_IMPLEMENTATION names another middleware, or when AVSNET_FASTDDS_PROFILE=0.

    python -m avsnet_ros.nodes.transport --profile-path   # for your own camera driver's process
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import MutableMapping

PROFILE_PATH = Path(__file__).resolve().with_name("fastdds_camera_profile.xml")
#: variables through which a user (or their launch setup) already chose a Fast DDS configuration
USER_CHOICE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_BUILTIN_TRANSPORTS")
OPT_OUT_VAR = "AVSNET_FASTDDS_PROFILE"
#: what configure_camera_transport() set in this process's environment (child processes inherit it;
#: launch/avsnet.launch.py passes it on explicitly)
APPLIED: dict[str, str] = {}


def camera_transport_env(environ: MutableMapping[str, str] | None = None,
                         cwd: str | os.PathLike | None = None) -> dict[str, str]:
    """The variables to add to `environ` (default os.environ) for camera-sized data; {} when the
    user already chose (see module docstring) or the middleware is not Fast DDS."""
    env = os.environ if environ is None else environ
    if env.get(OPT_OUT_VAR, "1").strip().lower() in ("0", "false", "off", "no"):
        return {}
    if any(env.get(name) for name in USER_CHOICE_VARS):
        return {}
    rmw = env.get("RMW_IMPLEMENTATION", "")
    if rmw and rmw != "rmw_fastrtps_cpp" and not rmw.startswith("rmw_fastrtps"):
        return {}
    if (Path(cwd if cwd is not None else os.getcwd()) / "DEFAULT_FASTDDS_PROFILES.xml").is_file():
        return {}
    if not PROFILE_PATH.is_file():  # an install without the data file: leave Fast DDS as it is
        return {}
    return {"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE_PATH),
            # let the profile's history memory policy and publish mode apply (rmw_fastrtps README)
            "RMW_FASTRTPS_USE_QOS_FROM_XML": "1"}


def configure_camera_transport(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Apply camera_transport_env() to `environ` (default os.environ, so the Fast DDS participant
    this process creates later reads it); returns what was set. Call before the first rclpy node."""
    env = os.environ if environ is None else environ
    extra = camera_transport_env(env)
    env.update(extra)
    if environ is None:
        APPLIED.update(extra)
    return extra


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile-path", action="store_true", help="print the shipped profile's path")
    args = parser.parse_args(argv)
    if args.profile_path:
        print(PROFILE_PATH)
        return 0
    extra = camera_transport_env(os.environ)
    print("would set: " + (", ".join(f"{k}={v}" for k, v in extra.items()) or "nothing (your choice stands)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
