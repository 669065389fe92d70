"""Offline fixtures: tiny random-init X-CLIP checkpoints and generated videos in several codecs.

Pretrained weights need the hub; these let tests and benchmarks run the whole pipeline offline in seconds with
transformers' own `XCLIPModel` (random weights, real CLIP tokenizer shipped in this package).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

TOKENIZER_DIR = Path(__file__).parent / "assets" / "clip-tokenizer"

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


#: Debian's headless Chromium for the browser test and the README screenshot: no network, no first-run work.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def preprocessor_config(image_size: int = 224) -> dict[str, object]:
    """The ``preprocessor_config.json`` of the released X-CLIP checkpoints, at `image_size` pixels."""
    return {
        "image_processor_type": "VideoMAEImageProcessor",
        "processor_class": "XCLIPProcessor",
        "size": {"shortest_edge": image_size},
        "crop_size": {"height": image_size, "width": image_size},
        "do_resize": True,
        "do_center_crop": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": IMAGENET_MEAN,
        "image_std": IMAGENET_STD,
        "resample": 2,
    }


def make_tiny_checkpoint(
    directory: str | Path,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    num_frames: int = 8,
    hidden: int = 32,
    projection_dim: int = 32,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
    preprocessor: Mapping[str, Any] | None = None,
    pickled: bool = False,
) -> Path:
    """Write a random-init `XCLIPModel` in save_pretrained layout (safetensors unless `pickled`)."""
    import torch
    from transformers import XCLIPConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = XCLIPConfig(
        text_config={
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "max_position_embeddings": 77,
        },
        vision_config={
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "image_size": image_size,
            "patch_size": patch_size,
            "num_frames": num_frames,
            "mit_hidden_size": projection_dim,
            "mit_intermediate_size": 2 * projection_dim,
            "mit_num_hidden_layers": 1,
            "mit_num_attention_heads": heads,
        },
        projection_dim=projection_dim,
        prompt_layers=2,
        prompt_num_attention_heads=heads,
    )
    return _save_random(out, config, image_size=image_size, preprocessor=preprocessor, pickled=pickled)


def make_base_checkpoint(directory: str | Path, *, seed: int = 0) -> Path:
    """A random-init checkpoint of ``microsoft/xclip-base-patch32``'s shape, offline.

    transformers' `XCLIPConfig` defaults are that model's configuration (ViT-B/32 at 224 px, 8 frames, 12-layer
    text tower, 512-d projections), so this has the real sizes, memory and speed, with random weights
    (``scripts/gpu_check.py`` compares devices on it; ~600 MB on disk).
    """
    import torch
    from transformers import XCLIPConfig

    torch.manual_seed(seed)
    return _save_random(Path(directory), XCLIPConfig(), image_size=224)


#: Whisper's timestamp tokens: 0.00 to 30.00 s in 0.02 s steps.
WHISPER_TIMESTAMPS = 1501


def whisper_tokenizer_json(text_tokens: int = 0, *, letter_pairs: bool = False) -> str:
    """A ``tokenizer.json`` with Whisper's special-token layout, built offline (the real vocabulary needs the hub).

    Byte-level BPE over the 256 byte symbols plus `text_tokens` two-symbol merges, then ``<|endoftext|>``,
    ``<|startoftranscript|>``, the 99 language tokens in Whisper's order, the task tokens, ``<|notimestamps|>``
    and the 1501 timestamp tokens, in the ids both transformers and faster-whisper derive from that layout
    (timestamp ids follow ``<|notimestamps|>``). ``text_tokens=50000`` gives the released multilingual models'
    vocabulary size (51865) for speed measurements. ``letter_pairs`` merges lower-case letter pairs only, so most
    tokens a random model picks decode to visible text (tests).
    """
    import string

    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    pairs = [(a, b) for a in alphabet for b in alphabet]
    if letter_pairs:
        pairs = [(a, b) for a in string.ascii_lowercase for b in string.ascii_lowercase]
    vocab = {symbol: i for i, symbol in enumerate(alphabet)}
    merges = pairs[:text_tokens]
    for first, second in merges:
        vocab[first + second] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = _whisper_special_tokens()
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in special])
    stamps = [f"<|{i * 0.02:.2f}|>" for i in range(WHISPER_TIMESTAMPS)]
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in stamps])
    return str(tokenizer.to_str())


def _whisper_special_tokens() -> list[str]:
    """Whisper's special tokens in id order, ``<|endoftext|>`` first and ``<|notimestamps|>`` last."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    special = ["<|endoftext|>", "<|startoftranscript|>"]
    special += [f"<|{code}|>" for code in list(LANGUAGES)[:99]]
    special += ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>"]
    return [*special, "<|notimestamps|>"]


def make_tiny_whisper(
    directory: str | Path,
    *,
    d_model: int = 32,
    layers: int = 1,
    heads: int = 2,
    text_tokens: int = 200,
    letter_pairs: bool = True,
    seed: int = 0,
    config_overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Write a random-init `WhisperForConditionalGeneration` in save_pretrained layout, with its tokenizer,
    feature extractor and generation config, offline. Its transcripts are noise; it exercises the plumbing.

    `config_overrides` sets any `WhisperConfig` field: ``make_tiny_whisper(d, d_model=384, layers=4, heads=6,
    text_tokens=50000, letter_pairs=False)`` is openai/whisper-tiny's shape (speed measurements,
    ``scripts/bench_speech.py``). The default vocabulary merges letter pairs (`whisper_tokenizer_json`).
    """
    import torch
    from tokenizers import Tokenizer
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration
    from transformers.models.whisper.tokenization_whisper import LANGUAGES
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    text = whisper_tokenizer_json(text_tokens, letter_pairs=letter_pairs)
    (out / "tokenizer.json").write_text(text)
    tokens = Tokenizer.from_str(text)

    def token_id(token: str) -> int:
        found = tokens.token_to_id(token)
        assert found is not None, token
        return int(found)

    eot, sot = token_id("<|endoftext|>"), token_id("<|startoftranscript|>")
    lang_to_id = {f"<|{code}|>": token_id(f"<|{code}|>") for code in list(LANGUAGES)[:99]}
    translate, no_timestamps = token_id("<|translate|>"), token_id("<|notimestamps|>")
    vocab_size, space = tokens.get_vocab_size(), token_id("Ġ")
    torch.manual_seed(seed)
    fields: dict[str, Any] = {
        "vocab_size": vocab_size,
        "d_model": d_model,
        "encoder_layers": layers,
        "decoder_layers": layers,
        "encoder_attention_heads": heads,
        "decoder_attention_heads": heads,
        "encoder_ffn_dim": 4 * d_model,
        "decoder_ffn_dim": 4 * d_model,
        "num_mel_bins": 80,
        "max_source_positions": 1500,
        "max_target_positions": 448,
        "pad_token_id": eot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "decoder_start_token_id": sot,
        "begin_suppress_tokens": [space, eot],
        "suppress_tokens": [],
    }
    fields.update(config_overrides or {})
    config = WhisperConfig(**fields)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=448,
        begin_suppress_tokens=[space, eot],
        suppress_tokens=[],
        no_timestamps_token_id=no_timestamps,
        prev_sot_token_id=translate + 3,
        max_initial_timestamp_index=50,
        is_multilingual=True,
        lang_to_id=lang_to_id,
        task_to_id={"translate": translate, "transcribe": translate + 1},
        forced_decoder_ids=None,
    )
    model.save_pretrained(out)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(out)
    tokenizer_config = {
        "tokenizer_class": "WhisperTokenizer",
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": 1024,
        # transformers reads timestamp ids as following the last of these (<|notimestamps|>)
        "additional_special_tokens": _whisper_special_tokens()[1:],
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1))
    return out


def _save_random(
    out: Path, config: Any, *, image_size: int, preprocessor: Mapping[str, Any] | None = None, pickled: bool = False
) -> Path:
    import torch
    from transformers import CLIPTokenizer, XCLIPModel

    out.mkdir(parents=True, exist_ok=True)
    model = XCLIPModel(config).eval()
    # Random init leaves alpha at 0.1 and the MLP near zero; widen it so the prompts visibly move scores.
    with torch.no_grad():
        model.prompts_generator.alpha.fill_(1.0)
    if pickled:
        config.save_pretrained(out)
        torch.save(model.state_dict(), out / "pytorch_model.bin")
    else:
        model.save_pretrained(out)
    tokenizer = CLIPTokenizer(str(TOKENIZER_DIR / "vocab.json"), str(TOKENIZER_DIR / "merges.txt"))
    tokenizer.save_pretrained(out)
    pre = dict(preprocessor if preprocessor is not None else preprocessor_config(image_size))
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=1))
    return out


def synthetic_frames(num_frames: int, height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """Frames with a moving coloured square over a textured background: content that changes over time."""
    rng = np.random.default_rng(seed)
    background = rng.integers(0, 255, size=(3,), dtype=np.uint8)
    colour = rng.integers(0, 255, size=(3,), dtype=np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.empty((height, width, 3), np.uint8)
    for c in range(3):
        base[..., c] = (background[c].astype(int) + (xx * (c + 1) + yy * (3 - c)) % 64).clip(0, 255)
    side = max(4, min(height, width) // 4)
    frames = np.repeat(base[None], num_frames, axis=0)
    for i in range(num_frames):
        x = int((width - side) * i / max(1, num_frames - 1))
        y = int((height - side) * (0.5 + 0.4 * np.sin(i / 3)))
        frames[i, y : y + side, x : x + side] = colour
    return frames


def speech_like_audio(seconds: float, *, sample_rate: int = 16_000, seed: int = 0) -> np.ndarray:
    """Mono float32 sound shaped like speech: voiced bursts (a wandering pitch with harmonics and a little
    noise) of 0.2-0.6 s with short pauses between them. Nothing is said; it gives a transcriber real audio."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    out = np.zeros(n, np.float32)
    pos = int(0.2 * sample_rate)
    while pos < n:
        length = min(n - pos, int(rng.uniform(0.2, 0.6) * sample_rate))
        t = np.arange(length) / sample_rate
        pitch = rng.uniform(100, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(2, 5) * t))
        phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
        voice = sum(np.sin(k * phase) / k for k in range(1, 6)) + 0.05 * rng.standard_normal(length)
        out[pos : pos + length] = 0.3 * np.hanning(length) * voice
        pos += length + int(rng.uniform(0.05, 0.3) * sample_rate)
    return out


def write_video_with_audio(
    path: str | Path,
    frames: np.ndarray,
    audio: np.ndarray | None,
    *,
    fps: int = 25,
    sample_rate: int = 16_000,
    broken_audio: bool = False,
) -> Path:
    """An H.264 + AAC file (container from the extension) with `audio` (mono float32 in [-1, 1]) as its sound.

    ``broken_audio=True`` muxes an AAC stream whose packets are random bytes: the video decodes, the audio
    cannot (a file that must not stop a transcription run).
    """
    import av

    out = Path(path)
    height, width = frames.shape[1:3]
    rng = np.random.default_rng(0)
    with av.open(str(out), mode="w") as container:
        video: Any = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound: Any = None
        if audio is not None or broken_audio:
            sound = container.add_stream("aac", rate=sample_rate)
            sound.layout = "mono"
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if broken_audio:
            seconds = len(frames) / fps
            for i in range(int(seconds * sample_rate / 1024)):
                packet = av.Packet(rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
                packet.stream = sound
                packet.pts = packet.dts = i * 1024
                packet.time_base = sound.time_base
                container.mux(packet)
        elif audio is not None:
            step = 1024
            for i in range(0, len(audio), step):
                chunk = np.ascontiguousarray(audio[i : i + step], dtype=np.float32)[None, :]
                frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = i
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return out


def write_video(
    path: str | Path,
    frames: np.ndarray,
    *,
    fps: int = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    options: Mapping[str, str] | None = None,
    subtitles: Sequence[tuple[float, float, str]] = (),
    subtitle_codec: str = "subrip",
    subtitle_language: str | None = None,
) -> Path:
    """Encode ``(T, H, W, 3)`` uint8 frames with PyAV (container from the file extension), with an optional text
    subtitle stream of ``(start_s, end_s, text)`` cues: `subtitle_codec` ``subrip`` or ``webvtt`` in Matroska,
    ``mov_text`` in MP4 (muxed as ready packets; PyAV has no subtitle encoder)."""
    import av

    out = Path(path)
    height, width = frames.shape[1:3]
    with av.open(str(out), mode="w") as container:
        stream: Any = container.add_stream(codec, rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = pix_fmt
        if options:
            stream.options = dict(options)
        text_stream: Any = container.add_mux_stream(subtitle_codec) if subtitles else None
        if text_stream is not None and subtitle_language:
            text_stream.metadata["language"] = subtitle_language
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if subtitles:
            base = text_stream.time_base or Fraction(1, 1000)
            for start, end, line in subtitles:
                data = line.encode("utf-8")
                if subtitle_codec == "mov_text":  # a 16-bit length before the text
                    data = len(data).to_bytes(2, "big") + data
                packet = av.Packet(data)
                packet.stream = text_stream
                packet.pts = packet.dts = round(float(start / base))
                packet.duration = round(float((end - start) / base))
                container.mux(packet)
    return out
