"""Multi-view geometry for self-supervised depth (Monodepth2 conventions).

Camera frame: x right, y down, z forward (optical frame, REP 103 ``*_optical_frame``).
Intrinsics K are in pixels of the image they are used with (use :func:`scale_intrinsics` after a
resize). Poses are 4x4 homogeneous matrices; ``T_target_to_source`` maps 3-D points expressed in
the target camera frame into the source camera frame (Monodepth2's ``T`` for frame ``f_i``).
Pixel coordinates for ``grid_sample`` are normalised with ``align_corners=True`` so that the
identity transform samples exactly the pixel centres.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


def intrinsics_4x4(K: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) or (B, 4, 4) or (3, 3) intrinsics -> (B, 4, 4) homogeneous form."""
    if K.dim() == 2:
        K = K.unsqueeze(0)
    if K.shape[-2:] == (4, 4):
        return K
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"intrinsics must be 3x3 or 4x4, got {tuple(K.shape)}")
    out = torch.eye(4, dtype=K.dtype, device=K.device).repeat(K.shape[0], 1, 1)
    out[:, :3, :3] = K
    return out


def scale_intrinsics(K: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Intrinsics (..., 3, 3) of an image resized by (sx, sy) = (new_w / old_w, new_h / old_h).

    torch front end of :func:`avsnet_ros.data.samples.scale_intrinsics` (pixel-centre convention of
    a resize with align_corners=False: cx' = (cx + 0.5) * sx - 0.5). Not differentiable in K.
    """
    from avsnet_ros.data.samples import scale_intrinsics as scale_intrinsics_hw

    scaled = scale_intrinsics_hw(K.detach().cpu().double().numpy(), (1.0, 1.0), (sy, sx))
    return torch.as_tensor(scaled, dtype=K.dtype, device=K.device)


class BackprojectDepth(nn.Module):
    """depth (B, 1, H, W), inv_K (B, 4, 4) or (B, 3, 3) -> homogeneous camera points (B, 4, H*W)."""

    def __init__(self, height: int, width: int):
        super().__init__()
        self.height, self.width = int(height), int(width)
        ys, xs = torch.meshgrid(
            torch.arange(self.height, dtype=torch.float32), torch.arange(self.width, dtype=torch.float32), indexing="ij"
        )
        pix = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.ones(self.height * self.width)], dim=0)
        self.register_buffer("pix_coords", pix.unsqueeze(0), persistent=False)  # (1, 3, H*W)

    def forward(self, depth: torch.Tensor, inv_K: torch.Tensor) -> torch.Tensor:
        b = depth.shape[0]
        if tuple(depth.shape[-2:]) != (self.height, self.width):
            raise ValueError(f"depth is {tuple(depth.shape[-2:])}, "
                             f"BackprojectDepth built for {(self.height, self.width)}")
        inv_K = intrinsics_4x4(inv_K).to(depth.dtype)
        rays = inv_K[:, :3, :3] @ self.pix_coords.to(depth.dtype).expand(b, -1, -1)  # (B, 3, N)
        points = depth.reshape(b, 1, -1) * rays
        ones = torch.ones_like(points[:, :1])
        return torch.cat([points, ones], dim=1)


class Project3D(nn.Module):
    """points (B, 4, H*W), K, T (B, 4, 4) -> sampling grid (B, H, W, 2) in [-1, 1] (align_corners=True)."""

    def __init__(self, height: int, width: int, eps: float = 1e-7):
        super().__init__()
        self.height, self.width, self.eps = int(height), int(width), eps

    def forward(self, points: torch.Tensor, K: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        b = points.shape[0]
        P = (intrinsics_4x4(K).to(points.dtype) @ T.to(points.dtype))[:, :3, :]  # (B, 3, 4)
        cam = P @ points  # (B, 3, N)
        pix = cam[:, :2] / (cam[:, 2:3] + self.eps)
        pix = pix.reshape(b, 2, self.height, self.width).permute(0, 2, 3, 1)
        scale = torch.tensor([self.width - 1, self.height - 1], dtype=pix.dtype, device=pix.device)
        return (pix / scale - 0.5) * 2.0


def rot_from_axisangle(axisangle: torch.Tensor) -> torch.Tensor:
    """Axis-angle (B, 3) or (B, 1, 3) -> rotation (B, 4, 4) by Rodrigues' formula."""
    v = axisangle.reshape(-1, 3)
    angle = torch.linalg.vector_norm(v, dim=1, keepdim=True)  # (B, 1)
    axis = v / (angle + 1e-7)
    x, y, z = axis[:, 0], axis[:, 1], axis[:, 2]
    zero = torch.zeros_like(x)
    kx = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=1).reshape(-1, 3, 3)  # [k]_x
    s = torch.sin(angle).unsqueeze(-1)
    c = torch.cos(angle).unsqueeze(-1)
    eye3 = torch.eye(3, dtype=v.dtype, device=v.device).expand_as(kx)
    R = eye3 + s * kx + (1.0 - c) * (kx @ kx)
    out = torch.eye(4, dtype=v.dtype, device=v.device).repeat(v.shape[0], 1, 1)
    out[:, :3, :3] = R
    return out


def get_translation_matrix(translation: torch.Tensor) -> torch.Tensor:
    """Translation (B, 3) or (B, 1, 3) -> (B, 4, 4)."""
    t = translation.reshape(-1, 3)
    out = torch.eye(4, dtype=t.dtype, device=t.device).repeat(t.shape[0], 1, 1)
    out[:, :3, 3] = t
    return out


def transformation_from_parameters(
    axisangle: torch.Tensor, translation: torch.Tensor, invert: bool = False
) -> torch.Tensor:
    """PoseNet output -> 4x4 transform (Monodepth2): ``T R`` or, with ``invert``, ``R^T (-t)``."""
    R = rot_from_axisangle(axisangle)
    t = translation.reshape(-1, 3)
    if invert:
        R = R.transpose(1, 2)
        t = -t
    T = get_translation_matrix(t)
    return R @ T if invert else T @ R


def warp_source(
    source_img: torch.Tensor,
    depth: torch.Tensor,
    T_target_to_source: torch.Tensor,
    K: torch.Tensor,
    inv_K: Optional[torch.Tensor] = None,
    padding_mode: str = "border",
) -> torch.Tensor:
    """Synthesise the target view from a source image.

    source_img (B, C, H, W); depth (B, 1, H, W) target depth; T_target_to_source (B, 4, 4);
    K / inv_K (B, 3, 3) or (B, 4, 4) in pixels of this H x W (inv_K computed when None).
    Returns the warped source (B, C, H, W): back-project target pixels with the depth, move them
    into the source camera, project with K and bilinearly sample the source.
    """
    h, w = depth.shape[-2:]
    if tuple(source_img.shape[-2:]) != (h, w):
        raise ValueError(f"source image {tuple(source_img.shape[-2:])} and depth {(h, w)} differ in size")
    K4 = intrinsics_4x4(K).to(depth.dtype)
    if K4.shape[0] == 1 and depth.shape[0] > 1:
        K4 = K4.expand(depth.shape[0], -1, -1)
    if inv_K is None:
        inv4 = torch.linalg.inv(K4)
    else:
        inv4 = intrinsics_4x4(inv_K).to(depth.dtype).expand(depth.shape[0], -1, -1)
    backproject = BackprojectDepth(h, w).to(depth.device)
    project = Project3D(h, w)
    grid = project(backproject(depth, inv4), K4, T_target_to_source)
    return F.grid_sample(source_img, grid.to(source_img.dtype), mode="bilinear", padding_mode=padding_mode,
                         align_corners=True)


__all__ = [
    "BackprojectDepth",
    "Project3D",
    "intrinsics_4x4",
    "scale_intrinsics",
    "rot_from_axisangle",
    "get_translation_matrix",
    "transformation_from_parameters",
    "warp_source",
]
