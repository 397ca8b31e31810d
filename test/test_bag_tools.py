"""training/bag_tools.py: from-batvision / info / to-batvision round trips, and `record` for real
over rclpy (a subprocess recorder, an in-test publisher, SIGINT/SIGTERM, then the bag is read)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from avsnet_ros.data import BV2Dataset, read_bag_samples
from training.bag_tools import main

REPO = Path(__file__).resolve().parents[1]


def _run(capsys, *argv) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_help_of_every_subcommand():
    out = subprocess.run([sys.executable, "training/bag_tools.py", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "from-batvision" in out.stdout and "record" in out.stdout
    for cmd in ("from-batvision", "to-batvision", "info", "record"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0


def test_from_batvision_info_to_batvision_round_trip(bv2_tree, tmp_path, capsys):
    bag = tmp_path / "bag"
    summary = _run(capsys, "from-batvision", str(bv2_tree), "--split", "test", "--out", str(bag), "--json")
    assert summary["samples"] == 1 and summary["layout"] == "bv2" and summary["max_depth_m"] == 30.0
    info = _run(capsys, "info", str(bag), "--json")
    assert info["message_count"] == 4 and info["storage"] == "mcap"
    assert {k: v["count"] for k, v in info["topics"].items()} == {
        "/camera/camera_info": 1, "/camera/image_raw": 1, "/avsnet/echo": 1, "/camera/depth_gt": 1}
    assert info["pairing"]["samples"] == 1 and info["pairing"]["frames_without_echo"] == 0
    from avsnet_ros.policy import DEFAULT_MAX_ECHO_AGE_S  # the one pairing default (0.6 s, the depth node's)

    assert main(["info", str(bag)]) == 0
    assert f"with echo within {DEFAULT_MAX_ECHO_AGE_S} s: 1" in capsys.readouterr().out

    original = BV2Dataset(bv2_tree, "test")[0]
    # Lossless variant: PNG + float32 wav -> identical samples through BV2Dataset.
    out = tmp_path / "files_png"
    s = _run(capsys, "to-batvision", str(bag), "--out", str(out), "--location", "rec", "--image-format", "png",
             "--json")
    assert s["samples"] == 1
    back = BV2Dataset(out, "test")[0]
    assert np.array_equal(back.rgb, original.rgb) and np.array_equal(back.echo, original.echo)
    assert np.array_equal(back.depth_m, original.depth_m, equal_nan=True)
    assert np.array_equal(back.intrinsics, original.intrinsics)
    assert (back.stamp_ns, back.sequence_id, back.frame_index) == (original.stamp_ns, original.sequence_id, 0)
    # The written depth file is the original uint16 millimetre map.
    assert np.array_equal(np.load(out / "rec" / "depth" / "depth_0.npy"),
                          np.load(bv2_tree / "fixture_location" / "depth" / "depth_47.npy"))
    # Default variant: JPEG quality 95 (lossy: small pixel changes) + int32 wav (exact for int32 sources).
    out2 = tmp_path / "files_jpeg"
    _run(capsys, "to-batvision", str(bag), "--out", str(out2), "--wav-format", "int32", "--json")
    back2 = BV2Dataset(out2, "test")[0]
    diff = np.abs(back2.rgb.astype(int) - original.rgb.astype(int))
    assert 0 < diff.mean() < 2.0
    assert np.array_equal(back2.echo, original.echo)
    from scipy.io import wavfile

    _, pcm = wavfile.read(out2 / "bag" / "audio" / "audio_0.wav")
    assert pcm.dtype == np.int32
    # Refuses to overwrite an existing split CSV.
    assert main(["to-batvision", str(bag), "--out", str(out2)]) == 2


def test_from_batvision_writes_the_sweep_changes_and_to_batvision_keeps_them(bv2_tree, tmp_path, capsys):
    """A BV2 CSV whose `sweep` column changes: one /avsnet/chirp message per change, the samples read
    back carry their sweep, and to-batvision writes it into the sweep column again."""
    import shutil

    from avsnet_ros.audio.frontend import SweepSpec

    root = tmp_path / "bv2"
    shutil.copytree(bv2_tree, root)
    short, long = SweepSpec(), SweepSpec(duration_s=0.03, method="exponential")
    loc = "fixture_location"
    files = f"{loc}/audio,audio_47.wav,{loc}/camera,camera_47.jpeg,{loc}/depth,depth_47.npy"
    rows = [f'{files},"{text}"' for text in ("", short.to_text(), short.to_text(), long.to_text())]
    header = "audio path,audio file name,camera path,camera file name,depth path,depth file name,sweep"
    (root / loc / "test.csv").write_text("\n".join([header, *rows]) + "\n")
    bag = tmp_path / "bag"
    summary = _run(capsys, "from-batvision", str(root), "--split", "test", "--out", str(bag), "--json")
    assert summary["samples"] == 4 and summary["messages"]["/avsnet/chirp"] == 2  # at rows 2 and 4
    samples, report = read_bag_samples(bag)
    assert [x.sweep for x in samples] == [None, short, short, long] and report.chirps == 2
    out = tmp_path / "files"
    _run(capsys, "to-batvision", str(bag), "--out", str(out), "--location", "rec", "--image-format", "png", "--json")
    back = BV2Dataset(out, "test")
    assert [back[i].sweep for i in range(len(back))] == [None, short, short, long]


# ------------------------------------------------------------------------------------------------
# record, for real
def _wait_for(predicate, timeout_s: float, what: str, proc=None):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"recorder exited early ({proc.returncode}) while waiting for {what}: "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.ros
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_record_over_rclpy_then_read_the_bag(tmp_path, stop_signal):
    import rclpy
    from builtin_interfaces.msg import Time
    from nav_msgs.msg import Odometry
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String

    from avsnet_ros.audio.frontend import SweepSpec
    from avsnet_ros.data.poses import camera_pose_world_optical
    from avsnet_ros.nodes.common import CHIRP_QOS

    domain_id = 120 + (os.getpid() + int(stop_signal)) % 100  # private DDS domain for this test
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    bag = tmp_path / "rec"
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    proc = None
    try:
        node = rclpy.create_node("record_test_publisher", context=ctx)
        # The emitter's sweep description, published before the recorder exists (transient local: recorded)
        sweep = SweepSpec(duration_s=0.02, method="exponential")
        chirp_pub = node.create_publisher(String, "/avsnet/chirp", CHIRP_QOS)
        chirp_pub.publish(String(data=sweep.to_text()))
        proc = subprocess.Popen(
            ["bash", "scripts/with_ros_env.sh", sys.executable, "training/bag_tools.py", "record", "--out", str(bag),
             "--json"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        pubs = {name: node.create_publisher(Image if name != "camera/camera_info" else CameraInfo, name, qos)
                for name in ("camera/image_raw", "camera/camera_info", "/avsnet/echo", "camera/depth_gt")}
        pubs["odom"] = node.create_publisher(Odometry, "odom", qos)
        _wait_for(lambda: all(p.get_subscription_count() > 0 for p in [*pubs.values(), chirp_pub]), 60.0,
                  "the recorder's subscriptions", proc)
        # The publisher sees the match before the recorder's (best-effort) reader has matched the
        # writer; data sent in between is dropped by DDS, so give discovery a moment to settle.
        time.sleep(1.0)
        rng = np.random.default_rng(7)
        sent = []
        base = 1_700_000_000_000_000_000
        for k in range(6):
            t = base + k * 100_000_000
            stamp = Time(sec=t // 10**9, nanosec=t % 10**9)
            rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            echo = rng.standard_normal((2, 5000)).astype(np.float32) * 0.1
            depth_mm = rng.integers(0, 20000, (12, 16)).astype(np.uint16)  # 16UC1 mm, 0 = invalid
            k_mat = np.array([[20.0 + k, 0, 7.5], [0, 20.0 + k, 5.5], [0, 0, 1]])
            img = Image(height=12, width=16, encoding="rgb8", is_bigendian=0, step=48, data=rgb.tobytes())
            img.header.stamp, img.header.frame_id = stamp, "camera_optical_frame"
            info = CameraInfo(height=12, width=16, distortion_model="plumb_bob", d=[0.0] * 5,
                              k=k_mat.reshape(-1).tolist())
            info.header.stamp = stamp
            em = Image(height=2, width=5000, encoding="32FC1", is_bigendian=0, step=20000, data=echo.tobytes())
            em.header.stamp = stamp
            dm = Image(height=12, width=16, encoding="16UC1", is_bigendian=0, step=32, data=depth_mm.tobytes())
            dm.header.stamp = stamp
            pubs["camera/camera_info"].publish(info)
            pubs["/avsnet/echo"].publish(em)
            pubs["camera/image_raw"].publish(img)
            pubs["camera/depth_gt"].publish(dm)
            odom = Odometry(child_frame_id="base_link")  # the base 10 cm further along x, turned 5 deg left per frame
            odom.header.stamp, odom.header.frame_id = stamp, "odom"
            odom.pose.pose.position.x = 0.1 * k
            odom.pose.pose.orientation.z, odom.pose.pose.orientation.w = np.sin(np.radians(2.5 * k)), np.cos(
                np.radians(2.5 * k))
            pubs["odom"].publish(odom)
            sent.append((t, rgb, echo, depth_mm, k_mat))
            time.sleep(0.03)
        time.sleep(1.0)  # let the recorder take the last messages before the signal
        proc.send_signal(stop_signal)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        rclpy.shutdown(context=ctx)
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["stopped_by"] in ("signal", "shutdown")
    assert summary["messages"] == {"/camera/image_raw": 6, "/camera/camera_info": 6, "/avsnet/echo": 6,
                                   "/camera/depth_gt": 6, "/avsnet/chirp": 1, "/odom": 6}, stderr
    samples, report = read_bag_samples(bag, max_echo_age_s=0.05)
    assert report.frames_total == 6 and report.samples == 6 and report.rejected == {}
    # the description (received when the recorder's subscription matched, before any echo) is every sample's
    assert report.chirps == 1 and all(s.sweep == sweep for s in samples)
    for s, (t, rgb, echo, depth_mm, k_mat) in zip(samples, sent):
        assert s.stamp_ns == t
        assert np.array_equal(s.rgb, rgb) and np.array_equal(s.echo, echo)
        np.testing.assert_array_equal(s.intrinsics, k_mat)
        ref = np.where(depth_mm == 0, np.nan, depth_mm.astype(np.float32) / np.float32(1000))
        assert np.array_equal(s.depth_m, ref.astype(np.float32), equal_nan=True)
        k_frame = (t - base) // 100_000_000  # the odometry: camera pose (the camera body frame is the base)
        expected = camera_pose_world_optical([0.1 * k_frame, 0.0, 0.0], 5.0 * k_frame, 0.0, 0.0)
        np.testing.assert_allclose(s.pose_world_cam, expected, atol=1e-9)
    # The storage file alone (as `ros2 bag record` leaves it, without our custom data) reads the same.
    bare, _ = read_bag_samples(bag / "rec.mcap", max_echo_age_s=0.05)
    assert [x.stamp_ns for x in bare] == [x.stamp_ns for x in samples] and bare[0].sequence_id == "rec"
    assert all(np.array_equal(a.rgb, b.rgb) and np.array_equal(a.echo, b.echo) for a, b in zip(bare, samples))


@pytest.mark.ros
def test_record_duration_stops_by_itself(tmp_path):
    env = dict(os.environ, ROS_DOMAIN_ID=str(120 + (os.getpid() + 50) % 100), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    out = subprocess.run(
        ["bash", "scripts/with_ros_env.sh", sys.executable, "training/bag_tools.py", "record", "--out",
         str(tmp_path / "rec"), "--duration-s", "0.5", "--storage", "sqlite3", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["stopped_by"] == "duration"
    from avsnet_ros.data import bag_info

    info = bag_info(tmp_path / "rec")
    assert info["storage"] == "sqlite3" and info["message_count"] == 0


@pytest.mark.ros
def test_record_subscribes_to_the_chirp_as_the_nodes_publish_it():
    """record_qos: /avsnet/chirp with CHIRP_QOS's reliability and durability (a late recorder gets the
    description), the sensor topics best effort and volatile (reliable with --reliable)."""
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy

    from avsnet_ros.nodes.common import CHIRP_QOS
    from training.bag_tools import record_qos

    chirp = record_qos("/avsnet/chirp", 100, reliable=False)
    assert (chirp.reliability, chirp.durability) == (CHIRP_QOS.reliability, CHIRP_QOS.durability)
    assert CHIRP_QOS.durability == DurabilityPolicy.TRANSIENT_LOCAL
    echo = record_qos("/avsnet/echo", 100, reliable=False)
    assert (echo.reliability, echo.durability, echo.depth) == (ReliabilityPolicy.BEST_EFFORT,
                                                               DurabilityPolicy.VOLATILE, 100)
    assert record_qos("/avsnet/echo", 5, reliable=True).reliability == ReliabilityPolicy.RELIABLE
