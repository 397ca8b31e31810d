"""The one RGB / echo preprocessing: training datasets, the inference pipeline and evaluation call it.

    rgb uint8 (H, W, 3) -> float32 (3, h, w) in [0, 1] at a model's input size: OpenCV INTER_AREA
        when shrinking (anti-aliased), INTER_LINEAR otherwise, in float32 (prepare_rgb)
    echo (2, N) float32 -> cut to the echo window for max_depth_m ("file": the first
        echo_window_samples, the BatVision preprocessing; "onset": from the detected sweep onset)
        -> magnitude STFT -> bilinear resize to (h, w) (echo_spectrogram; avsnet_ros.audio)

Frame path of the pipeline (:class:`FrameStager`): every model input of a batch is written straight
into one float32 host buffer (no intermediate tensors, stacks or concatenations), which is copied
to the model's device once (pinned and reused on CUDA; on the CPU the buffer is the input itself).
The STFT then runs on the device. Values equal prepare_rgb / echo_spectrogram exactly (same
operations in the same order).
"""
from __future__ import annotations

import threading
import warnings
from typing import Optional, Sequence

import numpy as np
import torch

__all__ = [
    "checked_size_hw",
    "luminance",
    "prepare_rgb",
    "prepare_rgb_sizes",
    "echo_spectrogram",
    "as_image_list",
    "crop_echoes",
    "checked_echoes",
    "FrameStager",
    "StagedBatch",
]

_SCRATCH = threading.local()


def luminance(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB -> (..., 1, H, W) Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601)."""
    return 0.299 * rgb[..., 0:1, :, :] + 0.587 * rgb[..., 1:2, :, :] + 0.114 * rgb[..., 2:3, :, :]


def checked_size_hw(size_hw: Sequence[int]) -> "tuple[int, int]":
    """(h, w) as ints; ValueError unless both are positive."""
    h, w = int(size_hw[0]), int(size_hw[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size_hw must be positive, got {size_hw}")
    return h, w


def _float_frame(x: np.ndarray) -> np.ndarray:
    """x (H, W, 3) uint8 as float32 in a per-thread buffer reused while the frame size stays the same
    (a fresh 11 MB array per 1280x720 frame costs ~2,700 page faults each time). Exact (uint8 -> float32)."""
    buf = getattr(_SCRATCH, "frame", None)
    if buf is None or buf.shape != x.shape:
        buf = np.empty(x.shape, dtype=np.float32)
        _SCRATCH.frame = buf
    if x.flags.writeable and x.flags.c_contiguous:
        # torch's copy converts on its intra-op threads (~0.08 ms vs numpy's 0.22 ms for 1280x720 on 2 cores);
        # torch.from_numpy warns about read-only arrays (a message's buffer), which take numpy's copy
        torch.from_numpy(buf).copy_(torch.from_numpy(x))
    else:
        np.copyto(buf, x)
    return buf


def prepare_rgb(rgb: np.ndarray, size_hw: Sequence[int]) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, h, w) float32 tensor in [0, 1] at size_hw."""
    return prepare_rgb_sizes(rgb, [size_hw])[0]


def prepare_rgb_sizes(rgb: np.ndarray, sizes_hw: Sequence[Sequence[int]],
                      out: Optional[Sequence[np.ndarray]] = None) -> "list[torch.Tensor]":
    """`prepare_rgb` of one image at several sizes (the pipeline's two models), converting it once.

    out: optional (3, h, w) float32 arrays (views of the pipeline's staging buffer) to write into;
    the returned tensors then share their memory. Speed (bench/bench_pipeline.py): the 1/255
    scaling comes after the resize, on the small image. Both resamplers are linear, so this equals
    scaling first up to float rounding (< 1e-6), with one full-resolution pass per image.
    """
    import cv2

    x = np.asarray(rgb)
    if x.ndim != 3 or x.shape[2] != 3 or x.dtype != np.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {x.shape} {x.dtype}")
    full = _float_frame(x)
    result = []
    for i, size_hw in enumerate(sizes_hw):
        h, w = checked_size_hw(size_hw)
        if full.shape[:2] != (h, w):
            shrink = h <= full.shape[0] and w <= full.shape[1]
            y = _resize_area(full, h, w) if shrink else cv2.resize(full, (w, h), interpolation=cv2.INTER_LINEAR)
        else:
            y = full
        dst = out[i] if out is not None else np.empty((3, h, w), dtype=np.float32)
        if dst.shape != (3, h, w) or dst.dtype != np.float32:
            raise ValueError(f"out[{i}] must be (3, {h}, {w}) float32, got {dst.shape} {dst.dtype}")
        # scale and HWC -> CHW in one pass (the same float operations as y * (1 / 255) then transpose)
        np.multiply(y.transpose(2, 0, 1), np.float32(1.0 / 255.0), out=dst)
        np.clip(dst, 0.0, 1.0, out=dst)
        result.append(torch.from_numpy(dst))
    return result


_AREA_ROWS: "dict[tuple[int, int], torch.Tensor]" = {}
_AREA_LOCK = threading.Lock()


def _area_rows(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) float32 sparse CSR tensor of INTER_AREA's weights along one axis (shrinking,
    n_out <= n_in): output i averages the source interval [i s, (i + 1) s), s = n_in / n_out, each
    source sample weighted by its overlap with that interval over s (OpenCV's resizeArea rule).
    Cached per size pair."""
    key = (int(n_in), int(n_out))
    with _AREA_LOCK:
        m = _AREA_ROWS.get(key)
    if m is None:
        scale = n_in / n_out
        indptr, cols, vals = [0], [], []
        for i in range(n_out):
            lo, hi = i * scale, (i + 1) * scale
            for j in range(int(np.floor(lo)), min(n_in, int(np.ceil(hi)))):
                overlap = min(hi, j + 1.0) - max(lo, float(j))
                if overlap > 1e-12:
                    cols.append(j)
                    vals.append(overlap / scale)
            indptr.append(len(cols))
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state": the product is checked
            warnings.simplefilter("ignore", UserWarning)  # against cv2 in test_hardening_data.py
            m = torch.sparse_csr_tensor(torch.tensor(indptr, dtype=torch.int64),
                                        torch.tensor(cols, dtype=torch.int64),
                                        torch.tensor(vals, dtype=torch.float32), size=(n_out, n_in),
                                        check_invariants=True)
        with _AREA_LOCK:
            _AREA_ROWS[key] = m
    return m


def _resize_area(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """cv2 INTER_AREA of (H, W, C) float32 to (h, w) (shrinking).

    INTER_AREA is separable: the height is reduced first as one sparse matrix product over the rows
    (_area_rows; each output row touches ~H/h input rows; torch's CSR product runs on the intra-op
    threads: 0.2 ms for 1280x720 -> 128 rows vs 0.45-0.9 ms for scipy's, same sums in the same order),
    then the width by OpenCV on the h-row image. Equals the one-step cv2.resize up to float rounding
    (< 1e-6 of full scale, test_hardening_data.py) at a fraction of its cost for a 1280x720 frame
    (bench/bench_pipeline.py): OpenCV's generic (non-integer factor) path is the slow one, and here it
    only ever sees the small image.
    """
    import cv2

    height, width, channels = x.shape
    if h != height:
        rows = torch.sparse.mm(_area_rows(height, h), torch.from_numpy(x.reshape(height, width * channels)))
        x = rows.numpy().reshape(h, width, channels)
    if w != width:
        x = cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA)
    return x


def echo_spectrogram(echo: np.ndarray, size_hw: Sequence[int], max_depth_m: float, sample_rate_hz: int,
                     audio_crop: str = "file", frontend=None, sweep=None) -> torch.Tensor:
    """(2, N) float32 echo -> (2, h, w) raw magnitude spectrogram at size_hw.

    frontend: an avsnet_ros.audio.frontend.EchoFrontEnd applied first (with the emitted `sweep`, a
    SweepSpec or None = identify), as DepthPipeline does with the model's ``audio_frontend``.

    The echo is cut to its first echo_window_samples(max_depth_m) samples ("file") or to the window
    starting at the detected sweep onset ("onset") by avsnet_ros.audio.crop_echo, then STFT'd and
    resized by avsnet_ros.audio.echo_to_spectrogram. Raises AudioError when the echo is too short.
    """
    from avsnet_ros.audio.align import crop_echo
    from avsnet_ros.audio.spectrogram import echo_to_spectrogram

    if frontend is not None:
        echo = frontend(echo, sweep).echo
    window = crop_echo(echo, max_depth_m, sample_rate_hz, start=audio_crop)
    return echo_to_spectrogram(torch.from_numpy(window)[None], checked_size_hw(size_hw))[0]


def as_image_list(rgb) -> "tuple[list[np.ndarray], bool]":
    """(H, W, 3) uint8 / (B, H, W, 3) / list of (H, W, 3) -> (list of images, single).

    ValueError for an empty batch, a wrong shape or dtype, or images of different sizes.
    """
    if isinstance(rgb, np.ndarray) and rgb.ndim == 4:
        images, single = list(rgb), False
    elif isinstance(rgb, (list, tuple)):
        images, single = list(rgb), False
    else:
        images, single = [rgb], True
    if not images:
        raise ValueError("no image given")
    out = []
    for i, im in enumerate(images):
        a = np.asarray(im)
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or a.shape[0] == 0 or a.shape[1] == 0:
            raise ValueError(f"image {i} must be (H, W, 3) uint8 RGB, got shape {a.shape} dtype {a.dtype}")
        out.append(a)
    if any(a.shape != out[0].shape for a in out):
        raise ValueError(f"all images of a batch must have the same size, got {[a.shape for a in out]}")
    return out, single


def crop_echoes(echo, batch: int, sample_rate_hz: int, model_rate_hz: int, max_depth_m: float,
                audio_crop: str = "file") -> "list[np.ndarray]":
    """One echo (2, N), a batch (B, 2, N) or a list -> ``batch`` float32 (2, window) echo windows.

    AudioError when the echo is missing, at another sample rate than the model's, not (2, N),
    non-finite or too short; ValueError when the number of echoes differs from ``batch``.
    """
    from avsnet_ros.audio import crop_echo

    return [crop_echo(e, max_depth_m, model_rate_hz, start=audio_crop)
            for e in checked_echoes(echo, batch, sample_rate_hz, model_rate_hz)]


def checked_echoes(echo, batch: int, sample_rate_hz: int, model_rate_hz: int) -> "list[np.ndarray]":
    """One echo (2, N), a batch (B, 2, N) or a list -> ``batch`` whole float32 (2, N) buffers (checked as
    crop_echoes, without cropping)."""
    from avsnet_ros.audio import AudioError

    if echo is None:
        raise AudioError("this AVS-Net uses echoes: an echo buffer (2, N) per image is required")
    if int(sample_rate_hz) != int(model_rate_hz):
        raise AudioError(
            f"echo sample rate {sample_rate_hz} Hz differs from the model's {model_rate_hz} Hz (resample first)"
        )
    if isinstance(echo, np.ndarray) and echo.ndim == 3:
        echoes = list(echo)
    elif isinstance(echo, (list, tuple)):
        echoes = list(echo)
    else:
        echoes = [echo]
    if len(echoes) != batch:
        raise ValueError(f"got {batch} images but {len(echoes)} echo buffers")
    out = []
    for i, e in enumerate(echoes):
        e = np.asarray(e.detach().cpu().numpy() if isinstance(e, torch.Tensor) else e)
        if e.ndim != 2 or e.shape[0] != 2:
            raise AudioError(f"echo {i} must be (2, N) (row 0 left, row 1 right), got shape {e.shape}")
        if not np.all(np.isfinite(e)):
            raise AudioError(f"echo {i} holds non-finite samples")
        out.append(e.astype(np.float32, copy=False))
    return out


class StagedBatch:
    """Device tensors of one staged batch: ``rgb[size_hw]`` (B, 3, h, w) in [0, 1] per requested
    size, ``echo`` (B, 2, window) float32 or None."""

    def __init__(self, rgb: "dict[tuple[int, int], torch.Tensor]", echo: Optional[torch.Tensor]):
        self.rgb = rgb
        self.echo = echo


class FrameStager:
    """Writes a batch's model inputs into one host buffer and moves it to ``device`` in one copy.

    On CUDA the host buffer is pinned and reused: a CUDA event recorded after the asynchronous
    copy guards the next write. On the CPU a fresh buffer is the input itself (no copy; tensors
    handed out earlier are never overwritten). Thread-safe (one lock around staging).
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self._pinned: Optional[torch.Tensor] = None
        self._copied: Optional["torch.cuda.Event"] = None
        self._lock = threading.Lock()

    def _host(self, n: int) -> torch.Tensor:
        if self.device.type != "cuda":
            return torch.empty(n, dtype=torch.float32)
        if self._copied is not None:
            self._copied.synchronize()  # the previous copy out of the pinned buffer has finished
        if self._pinned is None or self._pinned.numel() < n:
            self._pinned = torch.empty(n, dtype=torch.float32).pin_memory()
        return self._pinned[:n]

    def stage(self, images: "list[np.ndarray]", sizes_hw: "Sequence[tuple[int, int]]",
              echoes: "Optional[list[np.ndarray]]" = None) -> StagedBatch:
        """images: B uint8 (H, W, 3) (``as_image_list``); sizes_hw: distinct model input sizes;
        echoes: B float32 (2, window) (``crop_echoes``) or None."""
        b = len(images)
        shapes = [(b, 3, h, w) for h, w in sizes_hw]
        if echoes is not None:
            shapes.append((b, *echoes[0].shape))
        counts = [int(np.prod(s)) for s in shapes]
        with self._lock:
            host = self._host(sum(counts))
            views, offset = [], 0
            for shape, n in zip(shapes, counts):
                views.append(host[offset: offset + n].view(shape))
                offset += n
            arrays = [v.numpy() for v in views]
            for i, im in enumerate(images):
                prepare_rgb_sizes(im, sizes_hw, out=[a[i] for a in arrays[: len(sizes_hw)]])
            if echoes is not None:
                for i, e in enumerate(echoes):
                    arrays[-1][i] = e
            if self.device.type == "cuda":
                dev = host.to(self.device, non_blocking=True)  # the one host -> device copy
                self._copied = torch.cuda.Event()
                self._copied.record()
                views, offset = [], 0
                for shape, n in zip(shapes, counts):
                    views.append(dev[offset: offset + n].view(shape))
                    offset += n
            elif self.device.type != "cpu":
                views = [v.to(self.device) for v in views]
        rgb = {tuple(s): v for s, v in zip(sizes_hw, views)}
        return StagedBatch(rgb, views[-1] if echoes is not None else None)
