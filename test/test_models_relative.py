"""Stage 2 networks and geometry: DepthNet/PoseNet shapes, Monodepth2 pose conventions checked
against scipy rotations, view synthesis (identity and a known translation), relative-model wrappers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from avsnet_ros.models import (
    DepthNet,
    DisparityRelative,
    PoseNet,
    RelativeDepthConfig,
    RelativeDepthModel,
    as_relative_model,
    build_model,
    disp_to_depth,
    transformation_from_parameters,
    warp_source,
)
from avsnet_ros.models.geometry import BackprojectDepth, Project3D, intrinsics_4x4, scale_intrinsics

H, W = 96, 320


def _K(b=1, f=60.0):
    K = torch.tensor([[f, 0.0, W / 2], [0.0, f, H / 2], [0.0, 0.0, 1.0]])
    return K.expand(b, 3, 3).clone()


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return build_model(RelativeDepthConfig()).eval(), build_model(RelativeDepthConfig(kind="posenet")).eval()


def test_depthnet_scales_and_range(nets):
    depthnet, _ = nets
    with torch.no_grad():
        out = depthnet(torch.rand(2, 3, H, W))
    assert sorted(out) == [0, 1, 2, 3]
    for s, disp in out.items():
        assert disp.shape == (2, 1, H // 2**s, W // 2**s)
        assert float(disp.min()) > 0.0 and float(disp.max()) < 1.0
    three = DepthNet(RelativeDepthConfig(scales=(0, 1, 2)))
    with torch.no_grad():
        assert sorted(three(torch.rand(1, 3, H, W))) == [0, 1, 2]
    with pytest.raises(ValueError):
        RelativeDepthConfig(scales=(1, 2))


def test_disp_to_depth_bounds():
    disp = torch.tensor([0.0, 0.5, 1.0])
    scaled, depth = disp_to_depth(disp, 0.1, 100.0)
    torch.testing.assert_close(depth[[0, 2]], torch.tensor([100.0, 0.1]))
    torch.testing.assert_close(scaled * depth, torch.ones(3))


def test_posenet_output_shape(nets):
    _, posenet = nets
    with torch.no_grad():
        axisangle, translation = posenet(torch.rand(2, 3, H, W), torch.rand(2, 3, H, W))
    assert axisangle.shape == (2, 3) and translation.shape == (2, 3)


def test_transformation_matches_scipy():
    rng = np.random.default_rng(0)
    rotvec = rng.normal(size=(4, 3)) * 0.3
    t = rng.normal(size=(4, 3))
    T = transformation_from_parameters(torch.tensor(rotvec, dtype=torch.float64), torch.tensor(t, dtype=torch.float64))
    for i in range(4):
        ref = np.eye(4)
        ref[:3, :3] = Rotation.from_rotvec(rotvec[i]).as_matrix()
        ref[:3, 3] = t[i]
        np.testing.assert_allclose(T[i].numpy(), ref, atol=1e-6)  # 1e-7 epsilon in the axis norm
    Tinv = transformation_from_parameters(torch.tensor(rotvec), torch.tensor(t), invert=True)
    np.testing.assert_allclose((Tinv.double() @ T).numpy(), np.broadcast_to(np.eye(4), (4, 4, 4)), atol=1e-5)


def test_identity_pose_reproduces_target():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, H, W, generator=g)
    depth = 0.5 + 10 * torch.rand(2, 1, H, W, generator=g)
    warped = warp_source(target, depth, torch.eye(4).expand(2, 4, 4), _K(2))
    torch.testing.assert_close(warped, target, rtol=0, atol=1e-4)


def test_known_translation_shifts_pixels():
    """Fronto-parallel plane at Z: a camera translation t_x moves pixels by f t_x / Z (pinhole)."""
    f, z, shift_px = 60.0, 3.0, 2
    tx = shift_px * z / f
    g = torch.Generator().manual_seed(1)
    source = torch.rand(1, 3, H, W, generator=g)
    T = torch.eye(4).unsqueeze(0)
    T[0, 0, 3] = tx  # target point x -> source camera x + tx: lands shift_px to the right
    warped = warp_source(source, torch.full((1, 1, H, W), z), T, _K(1, f))
    expected = source[..., shift_px:]  # target pixel u samples source pixel u + shift_px
    torch.testing.assert_close(warped[..., : W - shift_px], expected, rtol=0, atol=1e-4)


def test_posenet_zeros_give_identity_warp(nets):
    _, posenet = nets
    with torch.no_grad():
        posenet.decoder.pose2.weight.zero_()
        posenet.decoder.pose2.bias.zero_()
    g = torch.Generator().manual_seed(2)
    target, source = torch.rand(2, 1, 3, H, W, generator=g)
    with torch.no_grad():
        for offset in (-1, 1):
            T = posenet.target_to_source(target, source, offset)
            torch.testing.assert_close(T, torch.eye(4).unsqueeze(0), rtol=0, atol=0)
            warped = warp_source(target, torch.full((1, 1, H, W), 4.0), T, _K(1))
            torch.testing.assert_close(warped, target, rtol=0, atol=1e-4)


def test_backproject_project_roundtrip():
    K = _K(1)
    depth = 1 + torch.rand(1, 1, H, W)
    points = BackprojectDepth(H, W)(depth, torch.linalg.inv(intrinsics_4x4(K)))
    grid = Project3D(H, W)(points, K, torch.eye(4).unsqueeze(0))
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    torch.testing.assert_close(grid[0, ..., 0], xs / (W - 1) * 2 - 1, rtol=0, atol=1e-5)
    torch.testing.assert_close(grid[0, ..., 1], ys / (H - 1) * 2 - 1, rtol=0, atol=1e-5)
    K2 = scale_intrinsics(K, 0.5, 0.5)
    # pixel-centre convention by hand: cy' = (48 + 0.5) * 0.5 - 0.5, cx' = (160 + 0.5) * 0.5 - 0.5
    assert float(K2[0, 0, 0]) == 30.0 and float(K2[0, 1, 2]) == 23.75 and float(K2[0, 0, 2]) == 79.75


def test_relative_model_wrappers(nets):
    depthnet, _ = nets
    rgb = torch.rand(1, 3, H, W)
    rel = as_relative_model(depthnet)
    assert isinstance(rel, RelativeDepthModel)
    with torch.no_grad():
        expected = disp_to_depth(depthnet(rgb)[0], 0.1, 100.0)[1]
        torch.testing.assert_close(rel(rgb), expected)
    disp = torch.tensor([[[2.0, 4.0], [0.5, -1.0]]])  # (B, H, W); a negative value (MiDaS sky)
    wrapped = as_relative_model(lambda x: disp, output="disparity")
    assert isinstance(wrapped, DisparityRelative)
    out = wrapped(rgb)
    assert out.shape == (1, 1, 2, 2)
    torch.testing.assert_close(out[0, 0], torch.tensor([[0.5, 0.25], [2.0, 1.0 / (1e-3 * 4.0)]]))
    depth_wrapped = as_relative_model(lambda x: torch.ones(1, 1, 2, 2) * 3.0)
    torch.testing.assert_close(depth_wrapped(rgb), torch.full((1, 1, 2, 2), 3.0))
    with pytest.raises(ValueError):
        as_relative_model(lambda x: x, output="metres")


def test_kind_checks():
    with pytest.raises(ValueError):
        DepthNet(RelativeDepthConfig(kind="posenet"))
    with pytest.raises(ValueError):
        PoseNet(RelativeDepthConfig(kind="depthnet"))
    paper = RelativeDepthConfig(preset="paper")
    assert paper.image_size_hw == (192, 640) and paper.encoder_hidden_sizes == (64, 128, 256, 512)


def test_warp_with_ground_truth_pose_reconstructs_synthetic_render():
    """Regression for the stage-2 conventions end to end: two frames of the synthetic world rendered
    from known poses; warping the source with the renderer's z-depth and the ground-truth
    T_target_to_source = inv(T_world_source) @ T_world_target must reproduce the target far better
    than no warp, and better than the inverted transform (a swapped convention)."""
    from training.losses import photometric_error
    from training.synthetic.raycast import render
    from training.synthetic.scene import PRESETS, intrinsics_for, rotation_world_optical, sample_layout

    preset = PRESETS["train"]
    layout = sample_layout(np.random.default_rng(3), preset, 3)
    h, w = 64, 128
    K = intrinsics_for(h, w, preset.hfov_deg)
    frames = [render(layout, pose, K, h, w) for pose in layout.poses]  # (depth_n, rgb uint8, sid)

    def world_from_camera(pose):
        T = np.eye(4)
        T[:3, :3] = rotation_world_optical(pose)
        T[:3, 3] = pose.position
        return T

    def rgb(i):
        return torch.from_numpy(frames[i][1]).permute(2, 0, 1)[None].float() / 255.0

    target = rgb(1)
    depth = torch.from_numpy(frames[1][0])[None, None].float()
    Kt = torch.from_numpy(K).float()[None]
    for j in (0, 2):
        T = np.linalg.inv(world_from_camera(layout.poses[j])) @ world_from_camera(layout.poses[1])
        assert np.linalg.norm(T[:3, 3]) > 1e-3  # the camera moved
        T = torch.from_numpy(T).float()[None]
        source = rgb(j)
        err_identity = float(photometric_error(source, target).mean())
        err_gt = float(photometric_error(warp_source(source, depth, T, Kt), target).mean())
        err_swapped = float(photometric_error(warp_source(source, depth, torch.linalg.inv(T), Kt), target).mean())
        assert err_gt < 0.6 * err_identity, (j, err_gt, err_identity)
        assert err_gt < 0.6 * err_swapped, (j, err_gt, err_swapped)


def test_luminance_input_sees_no_colour(tmp_path):
    """input="luminance": images of equal BT.601 luminance give the same depth whatever their colours; an
    "rgb" DepthNet with the same weights tells them apart; the setting survives save/load, and a
    config.json written before the field existed loads as "rgb"."""
    import json

    from avsnet_ros.models.checkpoint import load_model, save_checkpoint

    torch.manual_seed(0)
    cfg = RelativeDepthConfig(kind="depthnet", preset="tiny", image_size_hw=(64, 128), input="luminance")
    lum = build_model(cfg).eval()
    rgb_cfg = RelativeDepthConfig(kind="depthnet", preset="tiny", image_size_hw=(64, 128))
    plain = build_model(rgb_cfg).eval()
    plain.load_state_dict(lum.state_dict())  # the same weights: only the input differs
    x = torch.rand(1, 3, 64, 128)
    y = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # hand-computed BT.601
    grey = y.expand(-1, 3, -1, -1).clone()
    with torch.no_grad():
        torch.testing.assert_close(lum.depth(x), lum.depth(grey))
        torch.testing.assert_close(lum.depth(x), plain.depth(grey))
        assert not torch.allclose(plain.depth(x), plain.depth(grey))
    save_checkpoint(tmp_path / "lum", lum, cfg)
    loaded, loaded_cfg = load_model(tmp_path / "lum")
    assert loaded_cfg.input == "luminance"
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval().depth(x), lum.depth(x))
    doc = json.loads((tmp_path / "lum" / "config.json").read_text())
    del doc["input"]
    (tmp_path / "lum" / "config.json").write_text(json.dumps(doc))
    assert load_model(tmp_path / "lum")[1].input == "rgb"
    with pytest.raises(ValueError, match="input"):
        RelativeDepthConfig(kind="depthnet", preset="tiny", input="hsv")
