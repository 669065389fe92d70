"""CPU speed of Whisper through faster-whisper (CTranslate2) and transformers: the real-time factor (issue 16).

    python scripts/bench_speech.py                      # whisper-tiny and whisper-base shapes, 2 threads
    python scripts/bench_speech.py --sizes tiny --windows 3 --tokens 100

Pretrained weights cannot be downloaded here, so both backends run a random-init model of the released
architecture (`xclip_search.testing.make_tiny_whisper` with openai/whisper-tiny's or -base's sizes and the
51865-token vocabulary); speed depends on the shapes, not the weights. A random model's transcript is noise of
arbitrary length, so each window decodes exactly ``--tokens`` tokens in both backends (the end-of-text token is
held back): 100 tokens per 30 s window is about normal speech (~150 words a minute with timestamps). Each
30 s window costs the log-mel features, the encoder and the token-by-token decoder, the work a transcription
does per window; the real-time factor is seconds of compute per second of audio (below 1: faster than real time).

The backends run alternately in one process on the same audio, so a loaded machine slows both alike; the ratio
is the figure to compare. faster-whisper runs int8 (its CPU default for these models) and float32.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {
    "tiny": {"d_model": 384, "layers": 4, "heads": 6},
    "base": {"d_model": 512, "layers": 6, "heads": 8},
}
WINDOW_S = 30.0
SAMPLE_RATE = 16_000


def _transformers_runner(model_dir: Path, tokens: int, threads: int):  # type: ignore[no-untyped-def]
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    torch.set_num_threads(threads)
    model = WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
    features = WhisperFeatureExtractor.from_pretrained(model_dir)

    def run(audio: np.ndarray) -> int:
        inputs = features(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(
                inputs.input_features,
                language="en",
                task="transcribe",
                return_timestamps=True,
                min_new_tokens=tokens,
                max_new_tokens=tokens,
                do_sample=False,
                num_beams=1,
            )
        return int(out.shape[-1])

    return run


def _faster_whisper_runner(ct2_dir: Path, tokens: int, threads: int, compute_type: str):  # type: ignore[no-untyped-def]
    from faster_whisper import WhisperModel

    model = WhisperModel(str(ct2_dir), device="cpu", compute_type=compute_type, cpu_threads=threads)
    tok = model.hf_tokenizer
    eot = tok.token_to_id("<|endoftext|>")
    prompt = [tok.token_to_id(t) for t in ("<|startoftranscript|>", "<|en|>", "<|transcribe|>")]

    def run(audio: np.ndarray) -> int:
        # What WhisperModel.transcribe does per window, with the token count fixed: features, encoder, decoder.
        features = model.feature_extractor(audio)[:, : int(WINDOW_S * 100)]
        encoded = model.encode(features)
        result = model.model.generate(
            encoded, [prompt], beam_size=1, max_length=tokens + len(prompt), suppress_tokens=[eot], suppress_blank=False
        )
        return len(result[0].sequences_ids[0])

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"], choices=sorted(SIZES))
    parser.add_argument("--windows", type=int, default=3, help="30 s windows timed per backend (after a warm-up)")
    parser.add_argument("--tokens", type=int, default=100, help="tokens decoded per window")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from ctranslate2.converters import TransformersConverter

    from xclip_search.testing import make_tiny_whisper

    audio = (np.random.default_rng(0).standard_normal(int(WINDOW_S * SAMPLE_RATE)) * 0.1).astype(np.float32)
    print(f"{args.windows} windows of {WINDOW_S:g} s, {args.tokens} tokens each, {args.threads} threads")
    print(f"{'model':<6} {'backend':<24} {'s/window':>9} {'RTF':>7} {'vs transformers':>16}")
    for size in args.sizes:
        with tempfile.TemporaryDirectory(prefix="bench-speech-") as tmp:
            hf_dir = make_tiny_whisper(Path(tmp) / "hf", text_tokens=50_000, letter_pairs=False, **SIZES[size])
            ct2_dir = Path(tmp) / "ct2"
            TransformersConverter(str(hf_dir), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(
                str(ct2_dir)
            )
            runners = {
                "transformers fp32": _transformers_runner(hf_dir, args.tokens, args.threads),
                "faster-whisper int8": _faster_whisper_runner(ct2_dir, args.tokens, args.threads, "int8"),
                "faster-whisper fp32": _faster_whisper_runner(ct2_dir, args.tokens, args.threads, "float32"),
            }
            times: dict[str, list[float]] = {name: [] for name in runners}
            for run in runners.values():
                run(audio)  # warm-up
            for _ in range(args.windows):  # alternate, so load on the machine falls on every backend alike
                for name, run in runners.items():
                    started = time.perf_counter()
                    run(audio)
                    times[name].append(time.perf_counter() - started)
            base = statistics.median(times["transformers fp32"])
            for name, spent in times.items():
                median = statistics.median(spent)
                print(f"{size:<6} {name:<24} {median:>9.2f} {median / WINDOW_S:>7.3f} {base / median:>15.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
