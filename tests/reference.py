"""The reference pipeline the project is checked against: decord frames, `XCLIPProcessor` (PIL backend) pixels,
and `XCLIPModel.forward` scores. Written from the transformers docs and DESIGN.md §2, independent of the
project's own code paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, XCLIPModel, XCLIPProcessor
from transformers.models.videomae.image_processing_pil_videomae import VideoMAEImageProcessorPil


def reference_indices(start: int, end: int, num_frames: int) -> list[int]:
    avg = (end - start) / num_frames
    return [min(max(start + int(avg * i + avg / 2), start), end - 1) for i in range(num_frames)]


class Reference:
    def __init__(self, ckpt_dir: Path) -> None:
        self.model = XCLIPModel.from_pretrained(ckpt_dir).eval()
        self.processor = XCLIPProcessor(
            image_processor=VideoMAEImageProcessorPil.from_pretrained(ckpt_dir),
            tokenizer=AutoTokenizer.from_pretrained(ckpt_dir),
        )
        self.num_frames = self.model.config.vision_config.num_frames

    def frames(self, path: Path, start: int | None = None, end: int | None = None) -> np.ndarray:
        """decord, as X-CLIP was evaluated; PyAV (every frame, in order) where decord cannot read the file."""
        import decord

        try:
            vr = decord.VideoReader(str(path))
            a, b = start or 0, end or len(vr)
            return vr.get_batch(reference_indices(a, b, self.num_frames)).asnumpy()
        except decord.DECORDError:
            import av

            with av.open(str(path)) as container:
                every = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            a, b = start or 0, end or len(every)
            return np.stack([every[i] for i in reference_indices(a, b, self.num_frames)])

    def pixels(self, frames: np.ndarray) -> torch.Tensor:
        return self.processor(videos=list(frames), return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def scores(self, frames: np.ndarray, texts: list[str]) -> np.ndarray:
        """``logits_per_video / logit_scale.exp()`` for one video against `texts`."""
        inputs = self.processor(text=texts, videos=list(frames), return_tensors="pt", padding=True)
        out = self.model(**inputs)
        return (out.logits_per_video / self.model.logit_scale.exp())[0].numpy()

    @torch.no_grad()
    def coarse(self, frames: np.ndarray, text: str) -> float:
        """First-stage cosine: ``get_video_features`` against ``get_text_features``."""
        v = self.model.get_video_features(pixel_values=self.pixels(frames)).pooler_output[0]
        tok = self.processor.tokenizer([text], return_tensors="pt")
        t = self.model.get_text_features(**tok).pooler_output[0]
        return float(torch.nn.functional.cosine_similarity(v, t, dim=0))

    @torch.no_grad()
    def probs(self, frames: np.ndarray, labels: list[str]) -> np.ndarray:
        inputs = self.processor(text=labels, videos=list(frames), return_tensors="pt", padding=True)
        return self.model(**inputs).logits_per_video.softmax(dim=1)[0].numpy()
