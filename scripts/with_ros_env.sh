#!/usr/bin/env bash
# Run a command with the environment the ROS 2 pip wheels need: a private ROS_DOMAIN_ID unless one is
# set, and the venv's share/ on AMENT_PREFIX_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( ($$ % 100) + 1 ))}
export AMENT_PREFIX_PATH="$PWD/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PYTHONUNBUFFERED=1
exec "$@"
