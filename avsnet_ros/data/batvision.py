"""BatVision V1/V2 (and synthetic BV2-layout) datasets -> `Sample`s.

Layouts read exactly as the official dataset (README "Data"; Brunetto et al., IROS 2023;
AmandineBtto/Batvision-Dataset):

BV2: one folder per location; each holds train.csv / val.csv / test.csv with the columns
  'audio path', 'audio file name', 'camera path', 'camera file name', 'depth path', 'depth file name'.
  A file is <BV2 root>/<... path>/<... file name>: the paths start with the location folder.
  `root` may be the BV2 root (all location folders that have the split's CSV are used, sorted by
  name; `locations=` restricts them) or a single location folder (a folder that itself holds
  <split>.csv). For a single location folder the CSV paths are resolved against its parent (the
  BV2 root, as in the official files); if the first row's camera file is not found there but is
  found inside the location folder, the location folder is used instead (CSVs written relative to
  the location).
  Optional extra columns (synthetic data, to-batvision output), used when present:
    'sequence' (str) and 'frame' (int): sequence id and frame counter, for frame triples;
    'stamp_ns' (int): capture time;
    'fx', 'fy', 'cx', 'cy' (float, pixels of the stored image): intrinsics (all four or none);
    poses.POSE_COLUMNS (metres, degrees): the camera's pose in a fixed frame, odometry for stage 2
    (Sample.pose_world_cam; all six or none).
  Without them: sequence = location name, frame = data-row index in that CSV, stamp_ns =
  (dataset index + 1) * frame_period_s, intrinsics = nominal ZED 2 HD720 (samples.py) rescaled to
  the image size, or the `intrinsics` argument.

BV1: the root holds train.csv / val.csv / test.csv with 'depth path', 'audio path left',
  'audio path right', 'camera path left' relative to the root; audio is one .npy per channel at
  44100 Hz; depth .npy in millimetres that may hold NaN/inf.
  Scenes: BV1 has no scene column. The scene of a row is the folder part of its 'camera path left'
  (os.path.dirname, normalised). A scene change is a row whose scene differs from the previous
  row's; a sequence is a maximal run of consecutive rows of one scene (a scene that appears again
  later starts a new sequence "<scene>#<k>"). frame_index = position in the run, so frame triples
  (t - interval, t, t + interval) never cross a scene change.

All CSVs are read with the csv module by column name; an extra unnamed column (a pandas index
written with the CSV) is tolerated. Depth: millimetres / 1000 -> metres, 0/negative/NaN/inf ->
NaN. Values above max_depth_m are kept in Sample.depth_m and excluded by Sample.valid_mask and by
TorchSampleDataset (BV2 and the synthetic world: 30 m, BV1: 12 m).

Bad rows (a path that escapes the root: absolute or with '..' leading outside; a missing file;
an undecodable/truncated image; a corrupt or too-short wav/npy; depth/image size mismatch) raise
DatasetError naming the CSV file and the row (file line, header = 1). With skip_bad=True they are
skipped instead: rows with bad paths/missing files are dropped at construction; a row whose file
content turns out corrupt when loaded is counted, logged, and the next good row is returned in its
place (`verify=True` decodes every row at construction so that no substitution happens later).
`skipped` counts skipped rows (per process: DataLoader workers keep their own count), and
`skipped_rows` lists (csv, row, reason).
"""
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from avsnet_ros.audio.frontend import SweepSpec
from avsnet_ros.audio.sweep import DEFAULT_SAMPLE_RATE_HZ
from avsnet_ros.data.poses import POSE_COLUMNS, camera_pose_world_optical
from avsnet_ros.data.samples import (
    DatasetError,
    Sample,
    depth_mm_to_m,
    intrinsics_matrix,
    nominal_intrinsics,
)

__all__ = [
    "BV2_COLUMNS",
    "BV1_COLUMNS",
    "OPTIONAL_COLUMNS",
    "CsvRow",
    "SWEEP_FILE",
    "folder_sweep",
    "read_csv_rows",
    "load_bv2_csv",
    "load_bv1_csv",
    "BV2Dataset",
    "BV1Dataset",
    "SampleTriplet",
    "TripletDataset",
    "BV1TripletDataset",
    "read_rgb",
    "read_depth_npy",
    "detect_layout",
]

log = logging.getLogger(__name__)

BV2_COLUMNS = (
    "audio path",
    "audio file name",
    "camera path",
    "camera file name",
    "depth path",
    "depth file name",
)
BV1_COLUMNS = ("depth path", "audio path left", "audio path right", "camera path left")
OPTIONAL_COLUMNS = ("sequence", "frame", "stamp_ns", "fx", "fy", "cx", "cy", "sweep", *POSE_COLUMNS)
#: A dataset folder's (location's or root's) sweep description for rows without a `sweep` cell.
SWEEP_FILE = "sweep.txt"
SPLITS = ("train", "val", "test")
DEFAULT_FRAME_PERIOD_S = 0.1


@dataclass(frozen=True)
class CsvRow:
    """One data row of a BatVision CSV with its files resolved (not yet loaded).

    audio_paths: (wav,) for BV2, (left.npy, right.npy) for BV1. row: line number in the CSV file.
    intrinsics: (fx, fy, cx, cy) from optional columns, or None.
    sweep: the emitted sweep from the optional `sweep` column (SweepSpec text form), else from a
        `sweep.txt` next to the CSV or in the dataset root, else None (unknown).
    """

    csv_path: Path
    row: int
    audio_paths: "tuple[Path, ...]"
    camera_path: Path
    depth_path: "Path | None"
    sequence_id: str
    frame_index: int
    stamp_ns: "int | None"
    intrinsics: "tuple[float, float, float, float] | None"
    sweep: "SweepSpec | None" = None
    pose_world_cam: "np.ndarray | None" = None


def read_csv_rows(csv_path, required: Sequence[str]) -> "tuple[list[str], list[tuple[int, dict]]]":
    """Read a CSV by column name -> (column names, [(file line number, {column: value})]).

    Blank header cells (a pandas index column) are ignored; blank lines are skipped. Raises
    DatasetError (row 1) when a required column is missing or a column name is duplicated.
    """
    csv_path = Path(csv_path)
    try:
        fh = open(csv_path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DatasetError(f"cannot open CSV ({exc.strerror})", csv_path) from exc
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise DatasetError("empty CSV (no header)", csv_path, 1) from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DatasetError(f"unreadable CSV header ({exc})", csv_path, 1) from exc
        names = [h.strip() for h in header]
        named = [n for n in names if n and not n.startswith("Unnamed:")]
        dup = sorted({n for n in named if named.count(n) > 1})
        if dup:
            raise DatasetError(f"duplicated column(s) {dup}", csv_path, 1)
        missing = [c for c in required if c not in names]
        if missing:
            raise DatasetError(f"missing column(s) {missing}; the CSV has {named}", csv_path, 1)
        rows = []
        try:
            for cells in reader:
                line = reader.line_num
                if not any(c.strip() for c in cells):
                    continue
                if len(cells) != len(names):
                    raise DatasetError(
                        f"{len(cells)} cells but the header has {len(names)} columns", csv_path, line
                    )
                rows.append((line, {n: c.strip() for n, c in zip(names, cells) if n}))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DatasetError(f"unreadable CSV line ({exc})", csv_path, reader.line_num) from exc
    return named, rows


def _safe_join(base: Path, parts: Sequence[str], csv_path: Path, row: int, what: str) -> Path:
    """base / parts..., refusing absolute parts and '..' that lead outside base (checked lexically,
    so a dataset may use symlinks inside its root)."""
    rel = []
    for p in parts:
        if p == "":
            raise DatasetError(f"empty {what}", csv_path, row)
        if os.path.isabs(p) or p.startswith(("/", "\\")) or (len(p) > 1 and p[1] == ":"):
            raise DatasetError(f"{what} {p!r} is absolute: paths must be relative to the dataset root", csv_path, row)
        rel.append(p)
    joined = os.path.normpath(os.path.join(*rel))
    if joined == ".." or joined.startswith(".." + os.sep) or os.path.isabs(joined):
        raise DatasetError(
            f"{what} {os.path.join(*rel)!r} escapes the dataset root {str(base)!r}", csv_path, row
        )
    return base / joined


def _optional_fields(values: dict, csv_path: Path, row: int):
    seq = values.get("sequence")
    frame = values.get("frame")
    stamp = values.get("stamp_ns")
    try:
        frame_i = int(frame) if frame not in (None, "") else None
        stamp_i = int(stamp) if stamp not in (None, "") else None
    except ValueError as exc:
        raise DatasetError(f"bad frame/stamp_ns value ({exc})", csv_path, row) from None
    k = [values.get(c) for c in ("fx", "fy", "cx", "cy")]
    present = [v not in (None, "") for v in k]
    intr = None
    if any(present):
        if not all(present):
            raise DatasetError("intrinsics columns fx, fy, cx, cy must be all set or all empty", csv_path, row)
        try:
            intr = tuple(float(v) for v in k)
        except ValueError as exc:
            raise DatasetError(f"bad intrinsics value ({exc})", csv_path, row) from None
        if not all(np.isfinite(intr)) or intr[0] <= 0 or intr[1] <= 0:
            raise DatasetError(f"bad intrinsics {intr}", csv_path, row)
    sweep = None
    if values.get("sweep") not in (None, ""):
        try:
            sweep = SweepSpec.from_text(values["sweep"])
        except ValueError as exc:
            raise DatasetError(f"sweep column: {exc}", csv_path, row) from None
    return (seq or None), frame_i, stamp_i, intr, sweep, _pose(values, csv_path, row)


def _pose(values: dict, csv_path: Path, row: int) -> "np.ndarray | None":
    """T_world_optical (4, 4) from the POSE_COLUMNS (all set or all empty), else None."""
    v = [values.get(c) for c in POSE_COLUMNS]
    present = [x not in (None, "") for x in v]
    if not any(present):
        return None
    if not all(present):
        raise DatasetError(f"pose columns {', '.join(POSE_COLUMNS)} must be all set or all empty", csv_path, row)
    try:
        f = [float(x) for x in v]
    except ValueError as exc:
        raise DatasetError(f"bad pose value ({exc})", csv_path, row) from None
    if not all(np.isfinite(f)):
        raise DatasetError(f"non-finite pose {f}", csv_path, row)
    return camera_pose_world_optical(f[:3], *f[3:])


def folder_sweep(csv_path: Path, base_dir: Path) -> "SweepSpec | None":
    """The sweep described by `sweep.txt` (SweepSpec text form) next to the CSV, else in base_dir."""
    for folder in dict.fromkeys((Path(csv_path).parent, Path(base_dir))):
        path = folder / SWEEP_FILE
        if path.is_file():
            try:
                return SweepSpec.from_text(path.read_text(encoding="utf-8"))
            except (ValueError, OSError) as exc:
                raise DatasetError(f"{exc}", path) from None
    return None


def _check_files(r: CsvRow) -> None:
    for kind, p in [("audio", a) for a in r.audio_paths] + [("camera", r.camera_path), ("depth", r.depth_path)]:
        if p is not None and not p.is_file():
            raise DatasetError(f"{kind} file {str(p)!r} does not exist", r.csv_path, r.row)


def _collect(errors: "list | None", exc: DatasetError) -> None:
    if errors is None:
        raise exc
    errors.append(exc)


def _row(csv_path: Path, line: int, optional: tuple, audio_paths: tuple, camera: Path, depth: Path,
         default_sequence: str, default_frame: int, default_sweep: "SweepSpec | None" = None) -> CsvRow:
    """A CsvRow; the CSV's optional columns (``_optional_fields``) win over the layout's sequence/frame
    and the folder's sweep.txt."""
    seq, frame, stamp, intr, sweep, pose = optional
    return CsvRow(csv_path=csv_path, row=line, audio_paths=audio_paths, camera_path=camera, depth_path=depth,
                  sequence_id=seq if seq is not None else default_sequence,
                  frame_index=frame if frame is not None else default_frame, stamp_ns=stamp, intrinsics=intr,
                  sweep=sweep if sweep is not None else default_sweep, pose_world_cam=pose)


def load_bv2_csv(csv_path, base_dir, location: str = "", errors: "list | None" = None) -> "list[CsvRow]":
    """Parse one BV2 location CSV -> CsvRows with files resolved against base_dir (the BV2 root).

    Raises DatasetError for a missing column, a bad optional value, or a path escaping base_dir;
    when `errors` is a list, bad rows are appended to it (as DatasetError) and left out instead.
    File existence is not checked here (BV2Dataset does it).
    """
    csv_path = Path(csv_path)
    base_dir = Path(base_dir)
    _, rows = read_csv_rows(csv_path, BV2_COLUMNS)
    default_sweep = folder_sweep(csv_path, base_dir)
    out = []
    for i, (line, v) in enumerate(rows):
        try:
            optional = _optional_fields(v, csv_path, line)
            audio = _safe_join(base_dir, [v["audio path"], v["audio file name"]], csv_path, line, "audio path")
            camera = _safe_join(base_dir, [v["camera path"], v["camera file name"]], csv_path, line, "camera path")
            depth = _safe_join(base_dir, [v["depth path"], v["depth file name"]], csv_path, line, "depth path")
        except DatasetError as exc:
            _collect(errors, exc)
            continue
        out.append(_row(csv_path, line, optional, (audio,), camera, depth, location, i, default_sweep))
    return out


def load_bv1_csv(csv_path, base_dir, errors: "list | None" = None) -> "list[CsvRow]":
    """Parse a BV1 split CSV -> CsvRows; sequences are runs of one scene (see module docstring).

    Bad rows raise DatasetError, or are appended to `errors` and left out when it is a list (they
    still count as rows of their scene run, so positions keep matching the CSV).
    """
    csv_path = Path(csv_path)
    base_dir = Path(base_dir)
    _, rows = read_csv_rows(csv_path, BV1_COLUMNS)
    default_sweep = folder_sweep(csv_path, base_dir)
    out = []
    prev_scene = None
    runs_seen: "dict[str, int]" = {}
    pos = 0
    seq_name = ""
    for line, v in rows:
        scene = os.path.dirname(os.path.normpath(v["camera path left"])).replace(os.sep, "/")
        if scene != prev_scene:
            k = runs_seen.get(scene, 0)
            runs_seen[scene] = k + 1
            seq_name = scene if k == 0 else f"{scene}#{k}"
            pos = 0
            prev_scene = scene
        try:
            optional = _optional_fields(v, csv_path, line)
            cam = _safe_join(base_dir, [v["camera path left"]], csv_path, line, "camera path left")
            left = _safe_join(base_dir, [v["audio path left"]], csv_path, line, "audio path left")
            right = _safe_join(base_dir, [v["audio path right"]], csv_path, line, "audio path right")
            depth = _safe_join(base_dir, [v["depth path"]], csv_path, line, "depth path")
        except DatasetError as exc:
            _collect(errors, exc)
            pos += 1
            continue
        out.append(_row(csv_path, line, optional, (left, right), cam, depth, seq_name, pos, default_sweep))
        pos += 1
    return out


def read_rgb(path) -> np.ndarray:
    """Decode an image file -> (H, W, 3) uint8 RGB. Raises ValueError for an undecodable or
    truncated file (a JPEG must end with its EOI marker: libjpeg would otherwise return a
    grey-padded image for a truncated file with only a warning)."""
    import cv2

    data = Path(path).read_bytes()
    if len(data) == 0:
        raise ValueError("empty image file")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data.rstrip(b"\x00\r\n\t ")[-64:]:
        raise ValueError("truncated JPEG (no end-of-image marker)")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        raise ValueError("not a decodable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_depth_npy(path) -> np.ndarray:
    """Load a millimetre depth .npy -> (H, W) float32 metres, NaN invalid. ValueError if corrupt."""
    try:
        a = np.load(str(path), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy raises ValueError/EOFError/OSError/UnpicklingError
        raise ValueError(f"not a readable numeric .npy ({type(exc).__name__}: {exc})") from exc
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"depth must be a 2-D array, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"depth must be numeric, got dtype {a.dtype}")
    return depth_mm_to_m(a)


def detect_layout(root, split: str = "test") -> str:
    """'bv1' when root holds <split>.csv with BV1 columns, else 'bv2' (BV2 root or location)."""
    csv_path = Path(root) / f"{split}.csv"
    if csv_path.is_file():
        names, _ = read_csv_rows(csv_path, ())
        if all(c in names for c in BV1_COLUMNS) and "audio file name" not in names:
            return "bv1"
    return "bv2"


class _CsvDataset:
    """Shared loading, validation and skip accounting of the BV1/BV2 datasets."""

    kind = ""

    def __init__(self, root, split, max_depth_m, skip_bad, intrinsics, frame_period_s, verify, sample_rate_hz):
        """Reads the rows (``_read_rows``, per layout), drops or raises on bad ones, sets the shared state."""
        from avsnet_ros.audio.align import echo_window_samples

        self.root = Path(root)
        self.split = split
        row_errors: "list | None" = [] if skip_bad else None  # rows refused while parsing (skip_bad only)
        rows = self._read_rows(row_errors)
        self.max_depth_m = float(max_depth_m)
        self.skip_bad = bool(skip_bad)
        self.sample_rate_hz = int(sample_rate_hz)
        self.min_audio_samples = echo_window_samples(self.max_depth_m, self.sample_rate_hz)
        self.user_intrinsics = None if intrinsics is None else np.asarray(intrinsics, dtype=np.float64)
        if self.user_intrinsics is not None and self.user_intrinsics.shape != (3, 3):
            raise ValueError(f"intrinsics must be 3x3, got {self.user_intrinsics.shape}")
        self.frame_period_ns = int(round(float(frame_period_s) * 1e9))
        self.skipped = 0
        self.skipped_rows: "list[tuple[str, int, str]]" = []
        self._bad: "set[int]" = set()
        for exc in row_errors or ():
            self._count_skip(exc)
        self.rows: "list[CsvRow]" = self._passing(rows, lambda i, r: _check_files(r))
        if verify:
            self.rows = self._passing(self.rows, self._load)

    def _passing(self, rows: "list[CsvRow]", check) -> "list[CsvRow]":
        """The rows for which ``check(index, row)`` raises no DatasetError; a failing row raises (skip_bad
        False) or is counted as skipped and left out."""
        keep = []
        for i, r in enumerate(rows):
            try:
                check(i, r)
            except DatasetError as exc:
                if not self.skip_bad:
                    raise
                self._count_skip(exc)
                continue
            keep.append(r)
        return keep

    def _count_skip(self, exc: DatasetError) -> None:
        self.skipped += 1
        self.skipped_rows.append((exc.csv_path or "", exc.row or 0, exc.reason))
        log.warning("skipping bad %s row (%d skipped so far): %s", self.kind, self.skipped, exc)

    def __len__(self) -> int:
        return len(self.rows)

    def frame_keys(self) -> "list[tuple[str, int]]":
        """(sequence_id, frame_index) of every row, in dataset order, without loading files."""
        return [(r.sequence_id, r.frame_index) for r in self.rows]

    def _read_rows(self, errors: "list | None") -> "list[CsvRow]":
        """The layout's rows of ``self.split`` under ``self.root``; bad rows go to ``errors`` when a list."""
        raise NotImplementedError

    def _read_audio(self, r: CsvRow) -> np.ndarray:
        raise NotImplementedError

    def _load(self, index: int, r: CsvRow) -> Sample:
        from avsnet_ros.audio.io import AudioError

        try:
            echo = self._read_audio(r)
        except AudioError as exc:
            raise DatasetError(f"audio: {exc}", r.csv_path, r.row) from exc
        try:
            rgb = read_rgb(r.camera_path)
        except (ValueError, OSError) as exc:
            raise DatasetError(f"camera file {str(r.camera_path)!r}: {exc}", r.csv_path, r.row) from exc
        depth = None
        if r.depth_path is not None:
            try:
                depth = read_depth_npy(r.depth_path)
            except (ValueError, OSError) as exc:
                raise DatasetError(f"depth file {str(r.depth_path)!r}: {exc}", r.csv_path, r.row) from exc
            if depth.shape != rgb.shape[:2]:
                raise DatasetError(
                    f"depth size {depth.shape} differs from the camera image size {rgb.shape[:2]}",
                    r.csv_path,
                    r.row,
                )
        if r.intrinsics is not None:
            k = intrinsics_matrix(*r.intrinsics)
        elif self.user_intrinsics is not None:
            k = self.user_intrinsics.copy()
        else:
            k = nominal_intrinsics(rgb.shape[:2])
        stamp = r.stamp_ns if r.stamp_ns is not None else (index + 1) * self.frame_period_ns
        return Sample(
            rgb=rgb,
            echo=echo,
            sample_rate_hz=self.sample_rate_hz,
            depth_m=depth,
            intrinsics=k,
            stamp_ns=int(stamp),
            sequence_id=r.sequence_id,
            frame_index=int(r.frame_index),
            source=f"{r.csv_path}:row {r.row}",
            sweep=r.sweep,
            pose_world_cam=r.pose_world_cam,
        )

    def __getitem__(self, index: int) -> Sample:
        n = len(self.rows)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        index %= n
        for attempt in range(n):
            i = (index + attempt) % n
            if i in self._bad:
                continue
            try:
                return self._load(i, self.rows[i])
            except DatasetError as exc:
                if not self.skip_bad:
                    raise
                self._bad.add(i)
                self._count_skip(exc)
        raise DatasetError(f"no readable row left in this {self.kind} dataset ({self.skipped} skipped)")

    def triplets(self, interval: int) -> "TripletDataset":
        """Frame triples (t - interval, t, t + interval) inside one sequence (see TripletDataset)."""
        return TripletDataset(self, interval)


class BV2Dataset(_CsvDataset):
    """BatVision V2 layout (also the synthetic world's output) -> Samples.

    Args:
        root: BV2 root (location folders) or one location folder (see module docstring).
        split: 'train', 'val' or 'test' (any name with a <split>.csv works).
        max_depth_m: the dataset's max depth (30 m); audio shorter than its echo window is an error.
        skip_bad: skip bad rows (counted in `skipped`, logged) instead of raising DatasetError.
        locations: restrict to these location folder names.
        intrinsics: (3, 3) K in pixels of the stored images for rows without intrinsics columns
            (default: nominal ZED 2 HD720 rescaled to the image).
        frame_period_s: spacing of the synthesised stamps when the CSV has no 'stamp_ns'.
        verify: decode every row at construction (with skip_bad: drop the bad ones up front).
    """

    kind = "BV2"

    def __init__(
        self,
        root,
        split: str = "train",
        max_depth_m: float = 30.0,
        skip_bad: bool = False,
        locations: "Sequence[str] | None" = None,
        intrinsics=None,
        frame_period_s: float = DEFAULT_FRAME_PERIOD_S,
        verify: bool = False,
        sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ,
    ):
        self._wanted_locations = locations
        super().__init__(root, split, max_depth_m, skip_bad, intrinsics, frame_period_s, verify, sample_rate_hz)

    def _read_rows(self, errors: "list | None") -> "list[CsvRow]":
        """The rows of <split>.csv of every (wanted) location folder; ``self.locations`` in that order."""
        split, locations = self.split, self._wanted_locations
        if not self.root.is_dir():
            raise DatasetError(f"BV2 root {str(self.root)!r} is not a directory")
        rows: "list[CsvRow]" = []
        self.locations: "list[str]" = []
        if (self.root / f"{split}.csv").is_file():
            loc_dirs = [self.root]
        else:
            loc_dirs = []
            for d in sorted(p for p in self.root.iterdir() if p.is_dir()):
                if locations is not None and d.name not in locations:
                    continue
                if (d / f"{split}.csv").is_file():
                    loc_dirs.append(d)
                elif any((d / f"{s}.csv").is_file() for s in SPLITS):
                    log.warning("BV2 location %s has no %s.csv: not used for this split", d, split)
            if locations is not None:
                missing = sorted(set(locations) - {d.name for d in loc_dirs})
                if missing:
                    raise DatasetError(f"locations {missing} have no {split}.csv under {str(self.root)!r}")
        if not loc_dirs:
            raise DatasetError(
                f"no {split}.csv under {str(self.root)!r}: expected <root>/<location>/{split}.csv "
                f"(a BV2 root) or <root>/{split}.csv (one location folder)"
            )
        for d in loc_dirs:
            csv_path = d / f"{split}.csv"
            base = self._base_for(d, csv_path)
            rows.extend(load_bv2_csv(csv_path, base, location=d.name, errors=errors))
            self.locations.append(d.name)
        return rows

    @staticmethod
    def _base_for(loc_dir: Path, csv_path: Path) -> Path:
        """The folder the CSV's paths are relative to: the BV2 root (the location's parent), or the
        location folder itself when only that resolves the first row's camera file."""
        parent = loc_dir.parent
        try:
            _, rows = read_csv_rows(csv_path, BV2_COLUMNS)
        except DatasetError:
            return parent  # load_bv2_csv raises the precise error
        if rows:
            v = rows[0][1]
            rel = os.path.join(v["camera path"], v["camera file name"])
            if not (parent / rel).is_file() and (loc_dir / rel).is_file():
                return loc_dir
        return parent

    def _read_audio(self, r: CsvRow) -> np.ndarray:
        from avsnet_ros.audio.io import read_wav

        wave, _ = read_wav(r.audio_paths[0], expected_rate_hz=self.sample_rate_hz, channels=2,
                           min_samples=self.min_audio_samples)
        return wave


class BV1Dataset(_CsvDataset):
    """BatVision V1 layout -> Samples (max depth 12 m; audio as per-channel .npy at 44100 Hz).

    Args as BV2Dataset (root holds <split>.csv). Sequences are runs of one scene (module docstring).
    The BV1 files carry no calibration: the default intrinsics are the nominal ZED 2 values rescaled
    to the image size, an approximation; pass `intrinsics` when the calibration is known.
    """

    kind = "BV1"

    def __init__(self, root, split: str = "train", max_depth_m: float = 12.0, skip_bad: bool = False, intrinsics=None,
                 frame_period_s: float = DEFAULT_FRAME_PERIOD_S, verify: bool = False,
                 sample_rate_hz: int = DEFAULT_SAMPLE_RATE_HZ):
        super().__init__(root, split, max_depth_m, skip_bad, intrinsics, frame_period_s, verify, sample_rate_hz)

    def _read_rows(self, errors: "list | None") -> "list[CsvRow]":
        csv_path = self.root / f"{self.split}.csv"
        if not csv_path.is_file():
            raise DatasetError(f"BV1 split file {str(csv_path)!r} does not exist")
        return load_bv1_csv(csv_path, self.root, errors=errors)

    def _read_audio(self, r: CsvRow) -> np.ndarray:
        from avsnet_ros.audio.io import read_bv1_npy

        return read_bv1_npy(r.audio_paths[0], r.audio_paths[1], min_samples=self.min_audio_samples)


class SampleTriplet(NamedTuple):
    """Frames (t - interval, t, t + interval) of one sequence."""

    prev: Sample
    center: Sample
    next: Sample


class TripletDataset:
    """Frame triples over any dataset that has `frame_keys()` -> [(sequence_id, frame_index)].

    A triple (t - interval, t, t + interval) exists when all three frame indices are present in the
    same sequence; triples never cross a sequence (scene) change. Works on BV1Dataset (scene runs),
    BV2Dataset with 'sequence'/'frame' columns (synthetic sequences; without them: location and CSV
    row order), and SampleListDataset (rosbag samples). `indices[i]` = (prev, center, next) indices
    into `base`. __getitem__ -> SampleTriplet.
    """

    def __init__(self, base, interval: int):
        interval = int(interval)
        if interval < 1:
            raise ValueError(f"interval must be >= 1, got {interval}")
        self.base = base
        self.interval = interval
        self.max_depth_m = getattr(base, "max_depth_m", 30.0)
        keys = base.frame_keys()
        where = {}
        for i, key in enumerate(keys):
            where.setdefault(key, i)
        self.indices: "list[tuple[int, int, int]]" = []
        for i, (seq, frame) in enumerate(keys):
            a = where.get((seq, frame - interval))
            b = where.get((seq, frame + interval))
            if a is not None and b is not None and where[(seq, frame)] == i:
                self.indices.append((a, i, b))

    @property
    def skipped(self) -> int:
        return getattr(self.base, "skipped", 0)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> SampleTriplet:
        a, b, c = self.indices[index]
        return SampleTriplet(self.base[a], self.base[b], self.base[c])


class BV1TripletDataset(TripletDataset):
    """BV1 frame triples (t - interval, t, t + interval) inside one scene run (paper: interval 20).

    Extra keyword arguments go to BV1Dataset (max_depth_m, skip_bad, intrinsics, ...).
    """

    def __init__(self, root, split: str = "train", interval: int = 20, **kwargs):
        super().__init__(BV1Dataset(root, split, **kwargs), interval)


def __getattr__(name):
    # TorchSampleDataset lives in torch_dataset.py (imports torch); re-exported lazily so that
    # rosbag tools and readers that only need Samples do not pay for importing torch.
    if name in ("TorchSampleDataset", "TorchTripletDataset"):
        from avsnet_ros.data import torch_dataset

        return getattr(torch_dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
