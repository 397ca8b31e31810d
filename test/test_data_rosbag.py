"""rosbag2 I/O: files -> bag -> samples bit for bit, echo pairing by hand, encodings, bad bags."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from avsnet_ros.data import BV2Dataset, DatasetError, Sample, SampleListDataset, TripletDataset
from avsnet_ros.data.rosbag_io import (
    BagTopics,
    array_to_image_msg,
    bag_info,
    camera_info_msg,
    echo_to_image_msg,
    read_bag_samples,
    typestore,
    write_samples_to_bag,
)


def _assert_same(a: Sample, b: Sample) -> None:
    assert a.rgb.dtype == b.rgb.dtype == np.uint8 and np.array_equal(a.rgb, b.rgb)
    assert a.echo.dtype == b.echo.dtype == np.float32 and np.array_equal(a.echo, b.echo)
    assert a.depth_m.dtype == b.depth_m.dtype == np.float32
    assert np.array_equal(a.depth_m.view(np.uint32), b.depth_m.view(np.uint32))  # bit for bit, NaN included
    assert a.intrinsics.dtype == b.intrinsics.dtype == np.float64 and np.array_equal(a.intrinsics, b.intrinsics)
    assert (a.stamp_ns, a.sample_rate_hz, a.sequence_id, a.frame_index) == (
        b.stamp_ns, b.sample_rate_hz, b.sequence_id, b.frame_index)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_real_fixture_files_to_bag_to_samples_bit_for_bit(bv2_tree, tmp_path, storage):
    files = [BV2Dataset(bv2_tree, split)[0] for split in ("train", "val", "test")]
    # Three frames of the real instance at distinct stamps and frame indices.
    for i, s in enumerate(files):
        s.stamp_ns = 1_700_000_000_123_456_789 + i * 100_000_000
        s.frame_index = i
    summary = write_samples_to_bag(iter(files), tmp_path / "bag", storage=storage)
    assert summary["samples"] == 3 and summary["messages"]["/avsnet/echo"] == 3
    assert (tmp_path / "bag" / "metadata.yaml").is_file()
    assert any(p.suffix == (".mcap" if storage == "mcap" else ".db3") for p in (tmp_path / "bag").iterdir())
    samples, report = read_bag_samples(tmp_path / "bag")
    assert len(samples) == 3 and report.samples == 3 and report.frames_without_echo == 0
    assert report.rejected == {} and report.frames_without_camera_info == 0 and report.storage == storage
    for a, b in zip(files, samples):
        _assert_same(a, b)


def test_depth_16uc1_is_exact_for_millimetre_depth(bv2_tree, tmp_path):
    s = BV2Dataset(bv2_tree, "test")[0]
    write_samples_to_bag([s], tmp_path / "bag", depth_encoding="16UC1")
    info = bag_info(tmp_path / "bag")
    assert info["topics"]["/camera/depth_gt"]["count"] == 1
    (back,), _ = read_bag_samples(tmp_path / "bag")
    _assert_same(s, back)
    # The stored message is really 16UC1 millimetres equal to the .npy file.
    from rosbags.rosbag2 import Reader

    with Reader(tmp_path / "bag") as reader:
        conn = [c for c in reader.connections if c.topic == "/camera/depth_gt"]
        (_, _, raw), = list(reader.messages(connections=conn))
    msg = typestore().deserialize_cdr(raw, "sensor_msgs/msg/Image")
    assert msg.encoding == "16UC1" and msg.step == 2 * 1280
    mm = np.frombuffer(msg.data.tobytes(), "<u2").reshape(720, 1280)
    assert np.array_equal(mm, np.load(bv2_tree / "fixture_location" / "depth" / "depth_47.npy"))


def _write_raw_bag(path, images, echoes, depths=(), infos=(), chirps=()):
    """Low-level writer: lists of (stamp_ns, message) per topic, written in stamp order."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = typestore()
    topics = BagTopics()
    items = [(t, topics.image, m) for t, m in images] + [(t, topics.echo, m) for t, m in echoes]
    items += [(t, topics.depth, m) for t, m in depths] + [(t, topics.camera_info, m) for t, m in infos]
    items += [(t, topics.chirp, m) for t, m in chirps]
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {}
        for name, msgtype in topics.types().items():
            conns[name] = w.add_connection(name, msgtype, typestore=ts)
        for t, name, m in sorted(items, key=lambda x: x[0]):
            w.write(conns[name], t, ts.serialize_cdr(m, m.__msgtype__))


def test_echo_pairing_newest_before_within_max_age(tmp_path):
    s = 1_000_000_000
    ms = 1_000_000
    img_t = [s + k * 100 * ms for k in range(10)]  # camera at 10 Hz: 1.0 .. 1.9 s
    echo_t = [s + 50 * ms, s + 300 * ms, s + 320 * ms, s + 900 * ms, s + 950 * ms]
    # Echo k holds the constant value k + 1 so the pairing is visible in the samples.
    echoes = [(t, echo_to_image_msg(np.full((2, 4000), k + 1, np.float32), t)) for k, t in enumerate(echo_t)]
    # A malformed echo (16UC1) newer than the others at 1.45 s: rejected, never paired.
    bad = array_to_image_msg(np.zeros((2, 4000), np.uint16), "16UC1", s + 450 * ms, "microphones")
    echoes.append((s + 450 * ms, bad))
    images = [(t, array_to_image_msg(np.full((4, 6, 3), k, np.uint8), "rgb8", t, "cam")) for k, t in enumerate(img_t)]
    infos = [(s, camera_info_msg(np.array([[5.0, 0, 2.5], [0, 5.0, 1.5], [0, 0, 1]]), 6, 4, s))]
    _write_raw_bag(tmp_path / "bag", images, echoes, infos=infos)

    samples, report = read_bag_samples(tmp_path / "bag", max_echo_age_s=0.2)
    # Hand pairing (newest valid echo at or before the frame, at most 200 ms older):
    #  1.0: none before (echo at 1.05 is in the future)      -> dropped
    #  1.1: 1.05 (50 ms) -> 1      1.2: 1.05 (150 ms) -> 1      1.3: 1.30 (same stamp) -> 2
    #  1.4: 1.32 (80 ms) -> 3      1.5: 1.32 (180 ms) -> 3 (the bad echo at 1.45 is skipped)
    #  1.6, 1.7, 1.8: 1.32 is 280-480 ms old -> stale, dropped     1.9: 1.90 (0 ms) -> 4
    expected = {1: 1, 2: 1, 3: 2, 4: 3, 5: 3, 9: 4}
    assert [int(x.rgb[0, 0, 0]) for x in samples] == list(expected)
    assert [float(x.echo[0, 0]) for x in samples] == list(expected.values())
    assert [x.stamp_ns for x in samples] == [img_t[k] for k in expected]
    assert report.frames_total == 10 and report.samples == 6
    assert report.frames_without_echo == 4 and report.frames_stale_echo == 3
    assert report.frames_without_echo_stamps_ns == [img_t[k] for k in (0, 6, 7, 8)]
    assert report.echoes_total == 6 and report.echoes_used == 4 and report.rejected == {"echo_encoding": 1}
    assert report.frames_without_depth == 6  # no depth topic
    np.testing.assert_array_equal(samples[0].intrinsics, [[5, 0, 2.5], [0, 5, 1.5], [0, 0, 1]])
    # A recording has no custom frame table: sequence = bag name, frame = camera message position.
    assert {x.sequence_id for x in samples} == {"bag"} and [x.frame_index for x in samples] == list(expected)
    # A generous window pairs every frame except the first (no echo from the future, ever).
    all_samples, rep2 = read_bag_samples(tmp_path / "bag", max_echo_age_s=10.0)
    assert len(all_samples) == 9 and rep2.frames_stale_echo == 0 and rep2.frames_without_echo_stamps_ns == [img_t[0]]
    # info sees the same pairing without decoding images
    info = bag_info(tmp_path / "bag", max_echo_age_s=0.2)
    assert info["pairing"]["samples"] == 6 and info["topics"]["/avsnet/echo"]["count"] == 6


def test_encodings_padding_and_depth_variants(tmp_path):
    ts = typestore()
    s = 2_000_000_000
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    # bgr8 with 3 bytes of row padding
    bgr = rgb[:, :, ::-1]
    padded = np.zeros((4, 18), np.uint8)
    padded[:, :15] = bgr.reshape(4, 15)
    img_bgr = ts.types["sensor_msgs/msg/Image"](header=array_to_image_msg(rgb, "rgb8", s, "c").header, height=4,
                                                width=5, encoding="bgr8", is_bigendian=0, step=18,
                                                data=padded.reshape(-1))
    img_rgb = array_to_image_msg(rgb, "rgb8", s + 100_000_000, "c")
    img_mono = array_to_image_msg(np.zeros((4, 5), np.uint16), "16UC1", s + 200_000_000, "c")  # depth encoding
    depth_mm = np.array([[0, 1000, 2500, 65535, 7]] * 4, np.uint16)
    d16 = array_to_image_msg(depth_mm, "16UC1", s, "c")
    d32_values = np.array([[np.nan, np.inf, 0.0, -1.0, 3.25]] * 4, np.float32)
    # big-endian 32FC1
    d32 = ts.types["sensor_msgs/msg/Image"](header=img_rgb.header, height=4, width=5, encoding="32FC1",
                                            is_bigendian=1, step=20,
                                            data=np.frombuffer(d32_values.astype(">f4").tobytes(), np.uint8).copy())
    d_wrong = array_to_image_msg(np.zeros((3, 5), np.float32), "32FC1", s + 200_000_000, "c")
    echoes = [(s, echo_to_image_msg(np.ones((2, 100), np.float32), s))]
    _write_raw_bag(tmp_path / "bag", [(s, img_bgr), (s + 100_000_000, img_rgb), (s + 200_000_000, img_mono)], echoes,
                   depths=[(s, d16), (s + 100_000_000, d32), (s + 200_000_000, d_wrong)])
    samples, report = read_bag_samples(tmp_path / "bag")
    assert len(samples) == 2 and report.rejected == {"image_depth_encoding": 1}
    assert np.array_equal(samples[0].rgb, rgb) and np.array_equal(samples[1].rgb, rgb)
    np.testing.assert_array_equal(samples[0].depth_m[0], np.array([np.nan, 1.0, 2.5, 65.535, 0.007], np.float32))
    np.testing.assert_array_equal(samples[1].depth_m[0], np.array([np.nan, np.nan, np.nan, np.nan, 3.25], np.float32))
    # No camera_info in this bag: nominal intrinsics, counted.
    assert report.frames_without_camera_info == 2
    assert samples[0].intrinsics[0, 0] == pytest.approx(530 * 5 / 1280)


def test_triplets_from_bag_keep_sequences(tmp_path):
    def mk(seq, f, t):
        return Sample(rgb=np.full((2, 3, 3), f, np.uint8), echo=np.zeros((2, 50), np.float32), sample_rate_hz=44100,
                      depth_m=None, intrinsics=np.diag([2.0, 2.0, 1.0]), stamp_ns=t, sequence_id=seq, frame_index=f)

    src = [mk("seqA", f, 10**9 + f * 10**8) for f in range(4)] + [
        mk("seqB", f, 2 * 10**9 + f * 10**8) for f in range(3)]
    write_samples_to_bag(src, tmp_path / "bag")
    samples, report = read_bag_samples(tmp_path / "bag")
    assert [(x.sequence_id, x.frame_index) for x in samples] == [(x.sequence_id, x.frame_index) for x in src]
    assert report.frames_without_depth == 7
    tri = TripletDataset(SampleListDataset(samples), 1)
    assert tri.indices == [(0, 1, 2), (1, 2, 3), (4, 5, 6)]


def test_bad_bags_and_inputs(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_bag_samples(tmp_path / "nope")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "metadata.yaml").write_text("not: [a, bag")
    with pytest.raises(DatasetError, match="not a readable rosbag2"):
        read_bag_samples(tmp_path / "junk")
    # A bag without the echo topic.
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = typestore()
    with Writer(tmp_path / "noecho", version=8, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=ts)
        w.write(c, 1, ts.serialize_cdr(array_to_image_msg(np.zeros((2, 2, 3), np.uint8), "rgb8", 1, "c"),
                                       "sensor_msgs/msg/Image"))
    with pytest.raises(DatasetError, match="no '/avsnet/echo' messages"):
        read_bag_samples(tmp_path / "noecho")
    # The writer refuses echoes at a rate other than the 44100 Hz contract.
    s = Sample(rgb=np.zeros((2, 2, 3), np.uint8), echo=np.zeros((2, 10), np.float32), sample_rate_hz=48000,
               depth_m=None, intrinsics=np.eye(3), stamp_ns=1)
    with pytest.raises(ValueError, match="48000 Hz"):
        write_samples_to_bag([s], tmp_path / "rate")
    s.sample_rate_hz = 44100
    with pytest.raises(ValueError, match="duplicate stamp"):
        write_samples_to_bag([s, s], tmp_path / "dup")


# ------------------------------------------------------------------------------------------------
# the chirp description (/avsnet/chirp, issue 12)
def _chirp_messages(bag) -> list:
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == "/avsnet/chirp"]
        return [(t, typestore().deserialize_cdr(raw, "std_msgs/msg/String").data)
                for _, t, raw in reader.messages(connections=conns)]


def test_chirp_descriptions_round_trip_with_the_samples(tmp_path):
    from avsnet_ros.audio.frontend import SweepSpec

    short, long = SweepSpec(), SweepSpec(duration_s=0.03, method="exponential")
    sweeps = [None, short, short, long, None, long]
    stamps = [10**9 + k * 10**8 for k in range(len(sweeps))]
    src = [Sample(rgb=np.full((2, 3, 3), k, np.uint8), echo=np.full((2, 50), k, np.float32), sample_rate_hz=44100,
                  depth_m=None, intrinsics=np.diag([2.0, 2.0, 1.0]), stamp_ns=t, sequence_id="s", frame_index=k,
                  sweep=sweep) for k, (t, sweep) in enumerate(zip(stamps, sweeps))]
    summary = write_samples_to_bag(src, tmp_path / "bag")
    # one description where the sweep changes, at the sample's stamp ("unknown" when it becomes None)
    assert summary["messages"]["/avsnet/chirp"] == 4
    assert _chirp_messages(tmp_path / "bag") == [
        (stamps[1], short.to_text()), (stamps[3], long.to_text()), (stamps[4], "unknown"), (stamps[5], long.to_text())]
    samples, report = read_bag_samples(tmp_path / "bag")
    assert [x.sweep for x in samples] == sweeps
    assert [float(x.echo[0, 0]) for x in samples] == list(range(len(sweeps)))
    assert report.chirps == 4 and report.rejected == {}
    info = bag_info(tmp_path / "bag")
    assert info["topics"]["/avsnet/chirp"] == {"type": "std_msgs/msg/String", "count": 4}
    assert info["pairing"]["chirps"] == 4 and info["pairing"]["samples"] == 6
    # samples without any sweep: no chirp topic at all, sweeps read back as None
    write_samples_to_bag([dataclasses.replace(x, sweep=None) for x in src], tmp_path / "plain")
    assert "/avsnet/chirp" not in bag_info(tmp_path / "plain")["topics"]
    plain, report = read_bag_samples(tmp_path / "plain")
    assert [x.sweep for x in plain] == [None] * 6 and report.chirps == 0


def test_chirp_applies_to_the_echoes_logged_after_it_and_bad_ones_are_counted(tmp_path):
    from avsnet_ros.audio.frontend import SweepSpec

    ts = typestore()

    def chirp(text):
        return ts.types["std_msgs/msg/String"](data=text)

    s, ms = 1_000_000_000, 1_000_000
    a, b = SweepSpec(duration_s=0.01), SweepSpec(duration_s=0.02, method="exponential")
    frame_t = [s + k * 100 * ms for k in range(6)]  # 1.0 .. 1.5 s, each with its own echo
    images = [(t, array_to_image_msg(np.full((2, 3, 3), k, np.uint8), "rgb8", t, "c")) for k, t in enumerate(frame_t)]
    echoes = [(t, echo_to_image_msg(np.full((2, 50), k, np.float32), t)) for k, t in enumerate(frame_t)]
    chirps = [
        (s + 50 * ms, chirp(a.to_text())),      # -> frames 1, 2 (frame 0's echo came before any description)
        (s + 250 * ms, chirp("duration_s=")),   # unparsable: counted, a kept -> frame 3
        (s + 260 * ms, chirp(a.to_text().replace("44100", "48000"))),  # another rate: counted, a kept
        (s + 400 * ms, chirp(b.to_text())),     # same log time as echo 4: applies to it -> frames 4
        (s + 450 * ms, chirp("unknown")),       # -> frame 5: not known
    ]
    _write_raw_bag(tmp_path / "bag", images, echoes, chirps=chirps)
    samples, report = read_bag_samples(tmp_path / "bag", max_echo_age_s=0.05)
    assert [int(x.rgb[0, 0, 0]) for x in samples] == list(range(6))
    assert [x.sweep for x in samples] == [None, a, a, a, b, None]
    assert report.rejected == {"chirp_invalid": 2} and report.chirps == 3
    # the chirp topic of another type is refused like the other topics
    from rosbags.rosbag2 import StoragePlugin, Writer

    with Writer(tmp_path / "wrong", version=8, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("/avsnet/chirp", "sensor_msgs/msg/Image", typestore=ts)
        w.write(c, 1, ts.serialize_cdr(images[0][1], "sensor_msgs/msg/Image"))
    with pytest.raises(DatasetError, match="/avsnet/chirp has type sensor_msgs/msg/Image"):
        read_bag_samples(tmp_path / "wrong")
