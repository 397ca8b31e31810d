"""Camera poses from odometry, as the stage-2 warp needs them.

Conventions (REP 103): a camera's *body* frame has x forward, y left, z up; its *optical* frame
(REP 103 ``_optical`` suffix) has x right, y down, z forward. A pose is given in a fixed frame (the
robot's odometry frame, or a simulator's world) as a position in metres and yaw (about the fixed
z), pitch (about body y, positive = nose down, the right-hand rule) and roll (about body x):
R_world_body = Rz(yaw) @ Ry(pitch) @ Rx(roll).

The BV2-layout CSV may carry a frame's camera pose in the columns POSE_COLUMNS (metres, degrees);
stage 2 can then warp with this odometry instead of a learned PoseNet (train_relative.py
--pose-source odometry). In a rosbag2 the odometry is nav_msgs/Odometry (the base's pose in the
odometry frame), interpolated at each camera stamp and composed with the camera's pose on the base
(:func:`interpolate_pose`, :func:`camera_in_base`; data.rosbag_io).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["POSE_COLUMNS", "R_BODY_OPTICAL", "rotation_world_body", "camera_pose_world_optical",
           "target_to_source", "mirror_x", "quaternion_to_rotation", "rotation_to_quaternion", "slerp",
           "interpolate_pose", "camera_in_base", "body_pose_from_optical"]

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


# ------------------------------------------------------------------------------------------------
# odometry messages (nav_msgs/Odometry: the child frame's pose in the odometry frame, quaternion x y z w)
def quaternion_to_rotation(q_xyzw) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> rotation matrix (3, 3) float64 (normalised first; ValueError for a
    zero or non-finite quaternion)."""
    q = np.asarray(q_xyzw, dtype=np.float64).reshape(4)
    n = float(np.linalg.norm(q))
    if not np.isfinite(q).all() or n < 1e-9:
        raise ValueError(f"quaternion {q.tolist()} is zero or not finite")
    x, y, z, w = q / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def rotation_to_quaternion(r: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) -> unit quaternion (x, y, z, w) with w >= 0 (Shepperd's method)."""
    m = np.asarray(r, dtype=np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * math.sqrt(tr + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax([m[0, 0], m[1, 1], m[2, 2]]))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + m[i, i] - m[j, j] - m[k, k], 1e-300))
        q = [0.0, 0.0, 0.0, (m[k, j] - m[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def slerp(q0, q1, u: float) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions (x, y, z, w) at u in [0, 1] (shortest arc)."""
    a = np.asarray(q0, dtype=np.float64) / np.linalg.norm(q0)
    b = np.asarray(q1, dtype=np.float64) / np.linalg.norm(q1)
    dot = float(np.dot(a, b))
    if dot < 0.0:  # q and -q are one rotation: take the short way
        b, dot = -b, -dot
    if dot > 0.9995:  # nearly equal: linear interpolation is exact to rounding
        q = a + u * (b - a)
        return q / np.linalg.norm(q)
    theta = math.acos(min(1.0, dot))
    return (math.sin((1 - u) * theta) * a + math.sin(u * theta) * b) / math.sin(theta)


def interpolate_pose(stamp_ns: int, stamps_ns, positions, quaternions, max_gap_ns: int) -> "np.ndarray | None":
    """T_odom_child (4, 4) at ``stamp_ns`` from sorted odometry samples: linear in position, slerp in
    rotation between the two samples around it (an exact stamp match needs no partner). None when
    the stamp lies outside the samples or the two around it are more than ``max_gap_ns`` apart
    (never extrapolated)."""
    import bisect

    i = bisect.bisect_left(stamps_ns, stamp_ns)
    if i < len(stamps_ns) and stamps_ns[i] == stamp_ns:
        lo = hi = i
    elif i == 0 or i == len(stamps_ns):
        return None
    else:
        lo, hi = i - 1, i
        if stamps_ns[hi] - stamps_ns[lo] > max_gap_ns:
            return None
    u = 0.0 if hi == lo else (stamp_ns - stamps_ns[lo]) / (stamps_ns[hi] - stamps_ns[lo])
    t = np.eye(4)
    t[:3, :3] = quaternion_to_rotation(slerp(quaternions[lo], quaternions[hi], u))
    t[:3, 3] = (1 - u) * np.asarray(positions[lo], dtype=np.float64) + u * np.asarray(positions[hi], dtype=np.float64)
    return t


def camera_in_base(pose6) -> np.ndarray:
    """T_base_optical (4, 4): a camera body pose in the odometry child frame (e.g. base_link) given as
    [x_m, y_m, z_m, yaw_deg, pitch_deg, roll_deg] (REP 103, as the CSV pose columns) -> its optical frame."""
    v = [float(x) for x in pose6]
    if len(v) != 6 or not all(math.isfinite(x) for x in v):
        raise ValueError("camera pose in the base frame must be 6 finite numbers [x, y, z, yaw, pitch, roll], "
                         f"got {pose6}")
    return camera_pose_world_optical(v[:3], *v[3:])


def body_pose_from_optical(world_optical: np.ndarray) -> "tuple[float, float, float, float, float, float]":
    """Inverse of :func:`camera_pose_world_optical`: T_world_optical -> (x_m, y_m, z_m, yaw_deg, pitch_deg,
    roll_deg), the CSV pose columns (pitch in [-90, 90] deg)."""
    t = np.asarray(world_optical, dtype=np.float64)
    r = t[:3, :3] @ R_BODY_OPTICAL.T  # R_world_body = Rz(yaw) Ry(pitch) Rx(roll)
    pitch = math.asin(max(-1.0, min(1.0, -r[2, 0])))
    yaw = math.atan2(r[1, 0], r[0, 0])
    roll = math.atan2(r[2, 1], r[2, 2])
    return (float(t[0, 3]), float(t[1, 3]), float(t[2, 3]), math.degrees(yaw), math.degrees(pitch), math.degrees(roll))
