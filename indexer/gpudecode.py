"""GPU video decoding with NVDEC through PyNvVideoCodec: ``index --decoder nvdec``.

Why this library: it is the GPU decoder that installs from PyPI (``pip install PyNvVideoCodec``, wheels for
CUDA 12 and 13 drivers; 2.2.4 when checked on 2026-12-04). torchcodec's CUDA build is published on PyTorch's
own wheel index only, which this project's machines cannot reach (PyPI's torchcodec 0.17.0 is the CPU build),
and decord's GPU build is not published at all. PyNvVideoCodec also needs no torch, so the decode
workers stay torch-free (DESIGN.md §7) and this decoder plugs into them like decord and PyAV.

Same frames as the CPU decoders: the frame count ``n`` that the sampling formula (DESIGN.md §2) reads comes
from the container's packet index, exactly as the PyAV backend counts it; a file whose GPU frame count differs
is refused (`VideoError`), so the worker falls back to decord and PyAV for it. The sampled indices are then
asked for by index. The RGB conversion is NVIDIA's, not FFmpeg's, so pixels are close to decord's but not
bit-identical; ``scripts/gpu_check.sh`` measures the difference and its effect on scores on a GPU.

Frames come back to host memory (RGB24, like the other decoders) because resizing and cropping happen in the
worker; what moves to the GPU is the decoding itself, the expensive part for high-resolution video.

CUDA reserves a large virtual address range when it starts, which the workers' address-space cap (RLIMIT_AS,
``--worker-memory``) would refuse: a worker that opens a file with this decoder raises its soft cap to the
hard limit it was given. Decoded frames live in GPU memory, which that cap never covered.

`cpu_mode` runs the same wrapper with PyAV producing the frames: how the check script and the tests exercise
this path on machines without a GPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import resource
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from xclip_search.errors import DependencyError, VideoError

from .decoders import OpenVideo, PyAVDecoder, VideoInfo, clean_message

NVDEC = "nvdec"
_INSTALL_HINT = "pip install PyNvVideoCodec (needs an NVIDIA GPU and driver with video decoding)"


def import_nvc() -> Any:
    """PyNvVideoCodec, imported on first use; `DependencyError` (one line) when the package or GPU is missing."""
    quiet = logging.getLogger("PyNvVideoCodec")
    was = quiet.disabled
    quiet.disabled = True  # it logs its own multi-line diagnostics before raising; we say it in one line
    try:
        import PyNvVideoCodec as nvc
    except ImportError as exc:
        raise DependencyError(
            "The nvdec decoder needs PyNvVideoCodec, not installed here", hint=_INSTALL_HINT, argument="decoder"
        ) from exc
    except Exception as exc:  # the package checks the driver at import: RuntimeError without a GPU
        raise DependencyError(
            f"The nvdec decoder cannot start NVDEC: {clean_message(exc)}",
            hint="Run it on a machine with an NVIDIA GPU.",
            argument="decoder",
        ) from exc
    finally:
        quiet.disabled = was
    return nvc


def _allow_cuda_address_space() -> None:
    """Raise the soft address-space cap to the hard one in this process (see the module docstring)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))


class NvdecDecoder:
    """The ``nvdec`` decoder (see the module docstring); `cpu_mode` takes the frames from PyAV instead."""

    name = NVDEC

    def __init__(self, *, gpu_id: int = 0, cpu_mode: bool = False) -> None:
        self.gpu_id = gpu_id
        self.cpu_mode = cpu_mode

    def open(self, path: str) -> OpenVideo:
        return _NvdecVideo(path, gpu_id=self.gpu_id, cpu_mode=self.cpu_mode)


class _NvdecVideo:
    def __init__(self, path: str, *, gpu_id: int, cpu_mode: bool) -> None:
        # The packet index gives n exactly as the CPU decoders count it (and width, height, fps).
        self._cpu = PyAVDecoder().open(path)
        self.info: VideoInfo = self._cpu.info
        self.warnings = 0
        self._gpu: Any = None
        if cpu_mode:
            return
        self._cpu.close()
        _allow_cuda_address_space()  # before the import: the package loads the driver when imported
        try:
            nvc = import_nvc()
        except DependencyError as exc:
            raise VideoError(str(exc)) from exc
        try:
            self._gpu = nvc.SimpleDecoder(
                path, gpu_id=gpu_id, use_device_memory=False, output_color_type=nvc.OutputColorType.RGB
            )
            count = len(self._gpu)
        except Exception as exc:  # unsupported codec or profile, no free decoder session
            raise VideoError(f"cannot open the file on the GPU: {clean_message(exc)}") from exc
        if count != self.info.num_frames:
            self.close()
            raise VideoError(
                f"the GPU decoder counts {count} frames where the container index has {self.info.num_frames}"
            )

    def iter_frames(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        if self._gpu is None:
            yield from self._cpu.iter_frames(indices)
            self.warnings = self._cpu.warnings
            return
        wanted = [int(i) for i in indices]
        for i in wanted:
            if not 0 <= i < self.info.num_frames:
                raise VideoError(f"frame {i} is out of range (the file has {self.info.num_frames} frames)")
        try:
            # One call per segment: the decoder seeks once per keyframe group and decodes forward.
            frames = self._gpu.get_batch_frames_by_index(sorted(set(wanted)))
        except Exception as exc:
            raise VideoError(f"cannot decode on the GPU: {clean_message(exc)}") from exc
        by_index = dict(zip(sorted(set(wanted)), frames, strict=False))
        for i in wanted:
            if i not in by_index:
                raise VideoError(f"the GPU decoder returned no frame {i}")
            yield host_rgb(by_index[i], self.info.height, self.info.width)

    def close(self) -> None:
        self._gpu = None
        self._cpu.close()


def host_rgb(frame: Any, height: int, width: int) -> np.ndarray:
    """A decoded frame in host memory as an owned ``(H, W, 3)`` uint8 array (the decoder reuses its buffer).

    DLPack first (PyNvVideoCodec's frames export it); else the raw plane pointer and size, as NVIDIA's samples read
    host frames.
    """
    try:
        array = np.from_dlpack(frame)
    except (TypeError, AttributeError, BufferError, RuntimeError):
        size = int(frame.framesize())
        if size != height * width * 3:
            raise VideoError(f"the GPU decoder returned {size} bytes for a {width}x{height} RGB frame") from None
        pointer = ctypes.cast(int(frame.GetPtrToPlane(0)), ctypes.POINTER(ctypes.c_uint8))
        array = np.ctypeslib.as_array(pointer, shape=(size,))
    array = np.asarray(array, dtype=np.uint8)
    if array.size != height * width * 3:
        raise VideoError(f"the GPU decoder returned {array.size} values for a {width}x{height} RGB frame")
    return array.reshape(height, width, 3).copy()


#: ``index --decoder nvdec`` (registered lazily in `decoders.get_decoder`).
NVDEC_DECODER = NvdecDecoder()
#: The same wrapper fed by PyAV: ``scripts/gpu_check.sh --dry-run`` and the tests (``indexer.gpudecode:CPU_MODE``).
CPU_MODE = NvdecDecoder(cpu_mode=True)
