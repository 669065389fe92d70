"""Feeding the model: cropped uint8 segments in, ``v`` and ``Z`` out, with one batch in flight on a GPU.

On the CPU this is exactly the path the index always took: `CropNormalizer` turns the crops into float32 pixel
values and `XClipEncoder.encode_videos` embeds them, one batch after another (the same values, bit for bit).

On CUDA the model would otherwise wait for every copy and the host for every result. Instead:

- the uint8 crops (4x fewer bytes than float pixels) go into one of two pinned host buffers and are copied to
  the GPU on a separate stream (``non_blocking``), while the previous batch is still computing;
- the GPU turns them into pixel values with the same per-channel lookup table as `CropNormalizer` (the same
  float32 values: a table lookup, no arithmetic);
- results are copied back into pinned buffers and read when done (`poll`), at the latest one batch later, so
  `push` returns while the GPU works, and the caller decodes, reads the pool and writes the catalog meanwhile;
- the batch size, when the user gives none, is chosen from the GPU's free memory, measured on a first batch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from xclip_search.encoder import VideoEmbeddings, XClipEncoder
from xclip_search.pixels import PixelConfig

from .extract import CropNormalizer

T = TypeVar("T")

#: Share of the GPU's free memory a run's batches may take (the rest: the allocator's slack, other processes).
GPU_MEMORY_SHARE = 0.6
#: Largest batch chosen automatically: decoding, not the model, limits a GPU run, so bigger batches only add
#: latency (segments wait longer for their batch to fill) and host memory for the queued crops.
MAX_AUTO_BATCH = 256
_PROBE_BATCH = 4


@dataclass
class _InFlight(Generic[T]):
    payload: T
    count: int
    v: torch.Tensor
    z: torch.Tensor
    done: Any  # torch.cuda.Event (None on the CPU)


class ModelFeed(Generic[T]):
    """`push` batches of crops with a payload each; get ``(payload, embeddings)`` back in push order.

    On the CPU every `push` returns its own result; on CUDA it returns the previous batch's (one in flight), and
    `drain` returns the rest. `batch_size` is what the caller should put in one push. `overlap` (default: on
    CUDA) chooses the staged path; on the CPU it runs without pinned memory, streams or events, which is how the
    tests check that path's bookkeeping and values without a GPU.
    """

    def __init__(
        self,
        encoder: XClipEncoder,
        pixels: PixelConfig,
        *,
        batch_size: int,
        auto_batch: bool = False,
        overlap: bool | None = None,
    ) -> None:
        self.encoder = encoder
        self.to_pixels = CropNormalizer(pixels)
        self.device = encoder.device
        self.on_gpu = self.device.type == "cuda"
        self.overlap = self.on_gpu if overlap is None else overlap
        self.batch_size = batch_size
        self._auto = auto_batch and self.on_gpu
        self._flight: deque[_InFlight[T]] = deque()
        if self.overlap:
            self._table = torch.from_numpy(self.to_pixels.table).to(self.device)
            self._copy_stream = torch.cuda.Stream(self.device) if self.on_gpu else None
            self._staging: list[torch.Tensor | None] = [None, None]
            self._staged: list[Any] = [None, None]  # the event after which staging buffer k may be refilled
            self._turn = 0

    # -- the two paths ------------------------------------------------------------------------------------

    def push(self, crops: np.ndarray, payload: T) -> list[tuple[T, VideoEmbeddings]]:
        """Embed ``(B, T, h, w, 3)`` uint8 crops; returns every result that is ready (see the class docstring)."""
        if not self.overlap:
            return [(payload, self.encoder.encode_videos(self.to_pixels(crops)))]
        if self._auto:
            self._auto = False
            self.batch_size = self._measure_batch(crops)
        self._launch(crops, payload)
        ready = []
        while len(self._flight) > 1:
            ready.append(self._collect())
        return ready

    def poll(self) -> list[tuple[T, VideoEmbeddings]]:
        """The results of batches that have finished, without waiting: a caller waiting for input calls it, so
        a finished batch's files commit before the next batch fills."""
        ready = []
        while self._flight and (self._flight[0].done is None or self._flight[0].done.query()):
            ready.append(self._collect())
        return ready

    def drain(self) -> list[tuple[T, VideoEmbeddings]]:
        """The results of every batch still in flight."""
        ready = []
        while self._flight:
            ready.append(self._collect())
        return ready

    # -- CUDA ---------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def _launch(self, crops: np.ndarray, payload: T) -> None:
        n = len(crops)
        k = self._turn
        self._turn = 1 - k
        if self._staged[k] is not None:
            self._staged[k].synchronize()  # the copy that last read this buffer has finished
        buf = self._staging[k]
        if buf is None or buf.shape[0] < n or buf.shape[1:] != crops.shape[1:]:
            buf = self._staging[k] = torch.empty(
                (max(n, self.batch_size), *crops.shape[1:]), dtype=torch.uint8, pin_memory=self.on_gpu
            )
        np.copyto(buf[:n].numpy(), crops)
        if self._copy_stream is not None:
            compute = torch.cuda.current_stream(self.device)
            with torch.cuda.stream(self._copy_stream):
                staged = buf[:n].to(self.device, non_blocking=True)
                copied = torch.cuda.Event()
                copied.record(self._copy_stream)
            self._staged[k] = copied
            compute.wait_event(copied)
            staged.record_stream(compute)  # allocated on the copy stream, used on the compute stream
        else:
            staged = buf[:n]  # the CPU computes before `push` returns: the buffer is free again at once
        v, z = self.encoder.encode_video_tensors(self._normalize(staged))
        v_host = torch.empty(v.shape, dtype=torch.float32, pin_memory=self.on_gpu)
        z_host = torch.empty(z.shape, dtype=torch.float32, pin_memory=self.on_gpu)
        v_host.copy_(v.float(), non_blocking=True)
        z_host.copy_(z.float(), non_blocking=True)
        done = None
        if self.on_gpu:
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(self.device))
        self._flight.append(_InFlight(payload, n, v_host, z_host, done))

    def _normalize(self, crops: torch.Tensor) -> torch.Tensor:
        return normalize_crops(crops, self._table)

    def _collect(self) -> tuple[T, VideoEmbeddings]:
        item = self._flight.popleft()
        if item.done is not None:
            item.done.synchronize()
        emb = VideoEmbeddings(v=item.v.numpy().copy(), z=item.z.numpy().copy())
        return item.payload, emb

    def _measure_batch(self, crops: np.ndarray) -> int:
        """The largest batch that fits in `GPU_MEMORY_SHARE` of the free memory, from a probe batch's peak."""
        probe = np.repeat(crops[:1], _PROBE_BATCH, axis=0)
        torch.cuda.synchronize(self.device)
        free, _total = torch.cuda.mem_get_info(self.device)
        base = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        with torch.inference_mode():
            self.encoder.encode_video_tensors(self._normalize(torch.from_numpy(probe).to(self.device)))
        torch.cuda.synchronize(self.device)
        per_segment = max(1, (torch.cuda.max_memory_allocated(self.device) - base) // _PROBE_BATCH)
        return auto_batch_size(free, per_segment, self.batch_size)


def auto_batch_size(free_bytes: int, bytes_per_segment: int, floor: int) -> int:
    """Segments per batch for `free_bytes` of GPU memory: never below `floor` (the configured size)."""
    fits = int(free_bytes * GPU_MEMORY_SHARE) // max(1, bytes_per_segment)
    return max(floor, min(MAX_AUTO_BATCH, fits))


def normalize_crops(crops: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., h, w, 3)`` to float32 ``(..., 3, h, w)`` through `CropNormalizer`'s ``(3, 256)`` table, on
    the tensors' device: the same values as `CropNormalizer`, bit for bit (a lookup, no arithmetic)."""
    index = crops.movedim(-1, -3).long()  # (..., 3, h, w)
    out = torch.empty(index.shape, dtype=torch.float32, device=crops.device)
    for c in range(3):
        out[..., c, :, :] = table[c][index[..., c, :, :]]
    return out
