"""Camera poses from odometry, as the stage-2 warp needs them.

Conventions (REP 103): a camera's *body* frame has x forward, y left, z up; its *optical* frame
(REP 103 ``_optical`` suffix) has x right, y down, z forward. A pose is given in a fixed frame (the
robot's odometry frame, or a simulator's world) as a position in metres and yaw (about the fixed
z), pitch (about body y, positive = nose down, the right-hand rule) and roll (about body x):
R_world_body = Rz(yaw) @ Ry(pitch) @ Rx(roll).

The BV2-layout CSV may carry a frame's camera pose in the columns POSE_COLUMNS (metres, degrees);
stage 2 can then warp with this odometry instead of a learned PoseNet (train_relative.py
--pose-source odometry).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["POSE_COLUMNS", "R_BODY_OPTICAL", "rotation_world_body", "camera_pose_world_optical",
           "target_to_source", "mirror_x"]

#: Optional CSV columns: camera body pose in the fixed frame (metres, degrees).
POSE_COLUMNS = ("cam_x_m", "cam_y_m", "cam_z_m", "cam_yaw_deg", "cam_pitch_deg", "cam_roll_deg")

#: Columns of R are the optical axes in body coordinates: optical x (right) = body -y, optical y
#: (down) = body -z, optical z (forward) = body x.
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def rotation_world_body(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R_world_body = Rz(yaw) @ Ry(pitch) @ Rx(roll), (3, 3); angles in radians."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


def camera_pose_world_optical(position_m, yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """T_world_optical (4, 4) float64: maps points in the camera's optical frame (metres) to the
    fixed frame, from the body pose (position in metres, angles in degrees)."""
    t = np.eye(4)
    t[:3, :3] = rotation_world_body(math.radians(yaw_deg), math.radians(pitch_deg), math.radians(roll_deg)) \
        @ R_BODY_OPTICAL
    t[:3, 3] = np.asarray(position_m, dtype=np.float64).reshape(3)
    return t


def target_to_source(world_target: np.ndarray, world_source: np.ndarray) -> np.ndarray:
    """T_source_target (4, 4): maps points in the target camera's optical frame to the source's
    (the transform PoseNet.target_to_source predicts and training.losses.warp_source takes)."""
    r, t = world_source[:3, :3], world_source[:3, 3]
    source_world = np.eye(4)
    source_world[:3, :3] = r.T
    source_world[:3, 3] = -r.T @ t
    return source_world @ world_target


def mirror_x(transform: np.ndarray) -> np.ndarray:
    """The optical-frame transform seen in horizontally flipped images: S @ T @ S, S = diag(-1, 1, 1, 1)
    (a flip mirrors optical x for every camera of the triple)."""
    s = np.diag([-1.0, 1.0, 1.0, 1.0])
    return s @ transform @ s
