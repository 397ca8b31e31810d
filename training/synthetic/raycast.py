"""Vectorised numpy ray caster: z-depth, shaded RGB and surface ids of a room with box furniture.

One primary ray per pixel through the pixel centre (OpenCV convention: pixel (u, v) looks along
K^-1 (u, v, 1)). Rays are parameterised as X = p + t * R_world_optical @ (x_n, y_n, 1), so the ray
parameter t at the first hit IS the z-depth (the optical-axis coordinate of the hit point). The
scene is rendered in normalised units (see scene.py); callers multiply the depth by the room scale.

Shading: Lambertian albedo x procedural texture (in scene units), one point light near the ceiling
with a soft inverse-square fall-off, hard shadows cast by the boxes, ambient term, gamma 2.2.
"""
from __future__ import annotations

import numpy as np

from .scene import Layout, Look, Pose, rotation_world_optical

__all__ = ["render", "cast_rays", "pixel_rays"]

_EPS = 1e-9
_BIG = 1e30


def pixel_rays(k: np.ndarray, height: int, width: int, r_world_optical: np.ndarray) -> np.ndarray:
    """World ray directions (3, H*W) with unit optical-axis component (row-major pixel order)."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    xn = (u.ravel() - k[0, 2]) / k[0, 0]
    yn = (v.ravel() - k[1, 2]) / k[1, 1]
    d_opt = np.stack([xn, yn, np.ones_like(xn)])
    return r_world_optical @ d_opt


def _safe_inv(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        inv = 1.0 / d
    inv[~np.isfinite(inv)] = _BIG
    return inv


def _box_hits(p: np.ndarray, inv: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Slab test of rays (origin p (3,) or (3, N), inverse directions inv (3, N)) against one box.

    Returns t_enter (N,), hit mask (N,), entry axis (N,) and entry side (N,) (0 = lo face, 1 = hi).
    """
    p = p.reshape(3, -1)
    t1 = (lo[:, None] - p) * inv
    t2 = (hi[:, None] - p) * inv
    tn = np.minimum(t1, t2)
    tf = np.maximum(t1, t2)
    ax = np.argmax(tn, axis=0)
    t_enter = np.take_along_axis(tn, ax[None], axis=0)[0]
    t_exit = tf.min(axis=0)
    hit = (t_enter <= t_exit) & (t_enter > _EPS)
    d_ax = np.take_along_axis(d, ax[None], axis=0)[0]
    side = (d_ax < 0).astype(np.int64)  # moving towards -axis: we enter through the hi face
    return t_enter, hit, ax, side


def cast_rays(layout: Layout, origin: np.ndarray, d: np.ndarray):
    """First hit of rays from `origin` (3,) along `d` (3, N) inside the room.

    Returns t (N,) ray parameter, surface id (N,) int64, hit point (3, N), unit normal towards the
    air (3, N).
    """
    p = np.asarray(origin, dtype=np.float64)
    inv = _safe_inv(d)
    room = layout.room
    # Room interior: exit through the plane ahead along each axis.
    t_ax = np.where(d > 0, (room[:, None] - p[:, None]) * inv, (0.0 - p[:, None]) * inv)
    t_ax[np.abs(d) < _EPS] = _BIG
    ax = np.argmin(t_ax, axis=0)
    t = np.take_along_axis(t_ax, ax[None], axis=0)[0]
    side = (np.take_along_axis(d, ax[None], axis=0)[0] > 0).astype(np.int64)
    sid = 2 * ax + side
    # Normal towards the air: wall at coordinate 0 faces +axis, wall at the far end faces -axis.
    normal_sign = np.where(side == 0, 1.0, -1.0)
    for b, box in enumerate(layout.boxes):
        tb, hit, bax, bside = _box_hits(p, inv, d, box.lo, box.hi)
        closer = hit & (tb < t)
        t = np.where(closer, tb, t)
        ax = np.where(closer, bax, ax)
        sid = np.where(closer, 6 + 6 * b + 2 * bax + bside, sid)
        # Box face at lo faces -axis, at hi faces +axis.
        normal_sign = np.where(closer, np.where(bside == 0, -1.0, 1.0), normal_sign)
    x = p[:, None] + t[None] * d
    n = np.zeros_like(x)
    n[ax, np.arange(x.shape[1])] = normal_sign
    return t, sid, x, n


def _smoothstep(f):
    return f * f * (3.0 - 2.0 * f)


def _value_noise(a: np.ndarray, b: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Smooth value noise in [0, 1] at lattice coordinates (a, b), periodic in the grid size."""
    g = grid.shape[0]
    ia, ib = np.floor(a), np.floor(b)
    fa, fb = _smoothstep(a - ia), _smoothstep(b - ib)
    i0, j0 = ia.astype(np.int64) % g, ib.astype(np.int64) % g
    i1, j1 = (i0 + 1) % g, (j0 + 1) % g
    top = grid[i0, j0] * (1 - fa) + grid[i1, j0] * fa
    bot = grid[i0, j1] * (1 - fa) + grid[i1, j1] * fa
    return top * (1 - fb) + bot * fb


def _texture(look: Look, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Brightness multiplier (N,) of a surface at in-plane coordinates (a, b) (normalised units)."""
    per, c = look.period, look.contrast
    if look.axis == 1:
        a, b = b, a
    if look.kind == 1:  # planks along a: one brightness per plank, grain, dark seams
        plank = np.floor(b / per)
        tone = look.grid[(plank.astype(np.int64) % 16), 3]
        grain = _value_noise(a / (4 * per), b / (0.15 * per), look.grid)
        seam = ((b / per) - plank) < 0.05
        t = 1.0 + c * (tone - 0.5) + 0.5 * c * (grain - 0.5)
        t = np.where(seam, t * (1.0 - 0.8 * c), t)
    elif look.kind == 2:  # square tiles with grout lines
        ta, tb = a / (2 * per), b / (2 * per)
        ia, ib = np.floor(ta), np.floor(tb)
        tone = look.grid[ia.astype(np.int64) % 16, ib.astype(np.int64) % 16]
        grout = ((ta - ia) < 0.04) | ((tb - ib) < 0.04)
        t = 1.0 + 0.6 * c * (tone - 0.5)
        t = np.where(grout, 1.0 - 1.2 * c, t)
    elif look.kind == 3:  # fine noise (carpet, plaster)
        t = 1.0 + c * (_value_noise(a / (0.5 * per), b / (0.5 * per), look.grid) - 0.5) \
            + 0.5 * c * (_value_noise(a / (3 * per), b / (3 * per), look.grid.T) - 0.5)
    else:  # plain with large-scale mottling
        t = 1.0 + c * (_value_noise(a / (5 * per), b / (5 * per), look.grid) - 0.5)
    return np.clip(t, 0.0, 2.0)


def render(layout: Layout, pose: Pose, k: np.ndarray, height: int, width: int):
    """Render one frame of a layout from a normalised pose.

    Args:
        layout: the scale-free scene; pose: rig pose (normalised units, radians).
        k: (3, 3) intrinsics in pixels of the (height, width) image.
    Returns:
        depth_n: (H, W) float64 z-depth in NORMALISED units (multiply by scale_m for metres).
        rgb: (H, W, 3) uint8 sRGB-ish (gamma 2.2).
        sid: (H, W) int16 surface id (see scene.py).
    """
    r = rotation_world_optical(pose)
    d = pixel_rays(k, height, width, r)
    p = np.asarray(pose.position, dtype=np.float64)
    t, sid, x, n = cast_rays(layout, p, d)

    # Albedo x texture, per surface present in the image.
    albedo = np.zeros((3, t.size))
    for s in np.unique(sid):
        m = sid == s
        look = layout.looks[int(s)]
        ax = int(s % 6) // 2
        a_ax, b_ax = [i for i in range(3) if i != ax]
        tex = _texture(look, x[a_ax, m], x[b_ax, m])
        albedo[:, m] = look.albedo[:, None] * tex[None]

    # Point light with soft fall-off and box shadows.
    to_light = layout.light[:, None] - x
    dist2 = np.sum(to_light * to_light, axis=0)
    l_hat = to_light / np.sqrt(dist2)[None]
    lambert = np.clip(np.sum(n * l_hat, axis=0), 0.0, None)
    irradiance = layout.light_power * lambert * (0.35 / (0.35 + dist2))
    if layout.boxes:
        start = x + 1e-6 * n
        inv = _safe_inv(to_light)
        lit = np.ones(t.size, dtype=bool)
        for box in layout.boxes:
            tb, hit, _, _ = _box_hits(start, inv, to_light, box.lo, box.hi)
            lit &= ~(hit & (tb < 1.0))
        irradiance = np.where(lit, irradiance, 0.0)
    shade = layout.ambient + irradiance
    lin = np.clip(albedo * shade[None], 0.0, 1.0)
    rgb = np.round(255.0 * lin ** (1.0 / 2.2)).astype(np.uint8).T.reshape(height, width, 3)
    return t.reshape(height, width), rgb, sid.reshape(height, width).astype(np.int16)
