"""Finding and loading an X-CLIP checkpoint: hub id, local ``save_pretrained`` directory, or the demo model.

Weights load from safetensors only. A pickled ``pytorch_model.bin`` can run code while it loads, and an index
is meant to be shared, so a checkpoint without safetensors is refused with a message saying how to convert it.
The checkpoint's own tokenizer and ``preprocessor_config.json`` travel with it: X-CLIP's scores are only
X-CLIP's scores with the pixels and tokens it was trained on.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError, InvalidArgumentError
from .identity import ModelIdentity
from .pixels import PixelConfig

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase, XCLIPModel

DEFAULT_MODEL = "microsoft/xclip-base-patch32"
DEMO_MODEL = "demo"
DEMO_MODEL_DIR = Path(__file__).parent / "assets" / "demo-model"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.ckpt", "pytorch_model.pt")
_VOLATILE_CONFIG_KEYS = {"transformers_version", "_name_or_path", "torch_dtype", "dtype", "architectures"}


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model in eval mode on its device, its tokenizer and its pixel config."""

    model: XCLIPModel
    tokenizer: PreTrainedTokenizerBase
    pixels: PixelConfig
    identity: ModelIdentity
    directory: Path
    device: torch.device
    dtype: torch.dtype

    @property
    def num_frames(self) -> int:
        return self.identity.num_frames


def resolve_checkpoint(model: str, *, revision: str | None = None) -> tuple[Path, str, str | None]:
    """Return ``(directory, source, revision)`` for a model reference, downloading from the hub if needed.

    `source` is what an index records: ``demo``, an absolute directory, or a hub id.
    """
    if not model or not model.strip():
        raise InvalidArgumentError(
            "Empty model name", hint=f"Use a hub id such as {DEFAULT_MODEL}, a directory or 'demo'.", argument="model"
        )
    if model == DEMO_MODEL:
        if not (DEMO_MODEL_DIR / "config.json").is_file():
            raise CheckpointError(
                "The bundled demo model is missing from this installation",
                hint="Reinstall xclip-search, or train it with scripts/train_demo_model.py.",
            )
        return DEMO_MODEL_DIR, DEMO_MODEL, None
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(
                f"{model} is a file, not a checkpoint directory",
                hint="Pass the directory written by save_pretrained (config.json, model.safetensors, ...).",
            )
        return path.resolve(), str(path.resolve()), None
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or not _HUB_ID.match(model):
        raise CheckpointError(f"Checkpoint directory not found: {model}")
    return download(model, revision)


_CHECKPOINT_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "README.md")


def download(
    repo_id: str,
    revision: str | None,
    patterns: tuple[str, ...] = _CHECKPOINT_FILES,
    hint: str = "Check the id and your connection, use a local save_pretrained directory, or the model 'demo'.",
) -> tuple[Path, str, str | None]:
    """Fetch the files of `repo_id` matching `patterns` from the hub (or its local cache): ``(directory, repo_id,
    revision)``. Shared by X-CLIP checkpoints and speech models (`speech`)."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub comes with transformers
        raise CheckpointError("huggingface_hub is needed to download checkpoints") from exc
    try:
        directory = Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(patterns)))
    except Exception as exc:
        raise CheckpointError(
            f"Cannot fetch {repo_id} from the Hugging Face hub: {type(exc).__name__}: {exc}".split("\n")[0],
            hint=hint,
        ) from exc
    resolved = directory.name if directory.parent.name == "snapshots" else revision
    return directory, repo_id, resolved


def _check_weights_format(directory: Path) -> None:
    names = {p.name for p in directory.iterdir()}
    if any(n.endswith(".safetensors") or n == "model.safetensors.index.json" for n in names):
        return
    pickled = sorted(n for n in names if n in _PICKLED or n.endswith((".bin", ".pt", ".pth", ".ckpt")))
    if pickled:
        raise CheckpointError(
            f"{directory} has only pickled weights ({', '.join(pickled)}); xclip-search loads safetensors only",
            hint="Convert once with: XCLIPModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)"
            " in a trusted environment, or use the hub's safetensors revision.",
        )
    raise CheckpointError(f"{directory} holds no model weights (model.safetensors)")


def config_hash(model_config: dict[str, Any], pixels: PixelConfig) -> str:
    """A digest of everything that shapes the embeddings except the weights themselves."""
    cfg = {k: v for k, v in model_config.items() if k not in _VOLATILE_CONFIG_KEYS}
    for sub in ("text_config", "vision_config"):
        if isinstance(cfg.get(sub), dict):
            cfg[sub] = {k: v for k, v in cfg[sub].items() if k not in _VOLATILE_CONFIG_KEYS}
    blob = json.dumps({"model": cfg, "pixels": pixels.to_dict()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pick_device(device: str | None) -> torch.device:
    """CUDA when present unless told otherwise; a clear error for a device that does not exist."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise InvalidArgumentError(f"Invalid device ({device}). Supported values are auto, cpu, cuda[:N].") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidArgumentError(f"Device {device} was asked for but CUDA is not available here")
    return dev


def pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """float32 by default (exact scores); float16/bfloat16 on request, on CUDA only."""
    import torch

    check_dtype(dtype, device.type)
    names = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    return names[dtype] if dtype is not None and dtype != "auto" else torch.float32


def check_dtype(dtype: str | None, device: str | None) -> None:
    """Refuse an unknown dtype, or half precision on a device other than CUDA (`device` None or auto: not known
    yet). Needs no torch, so a command can refuse it before a model loads."""
    if dtype is None or dtype == "auto":
        return
    if dtype not in ("float32", "float16", "bfloat16"):
        raise InvalidArgumentError(f"Invalid dtype ({dtype}). Supported values are float32, float16, bfloat16.")
    if dtype != "float32" and device not in (None, "auto") and device.partition(":")[0] != "cuda":
        raise InvalidArgumentError(f"dtype {dtype} is supported on CUDA only; the CPU path runs float32")


def load_checkpoint(
    model: str = DEFAULT_MODEL,
    *,
    revision: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
) -> Checkpoint:
    """Load an X-CLIP checkpoint for inference. See the module docstring for what is refused and why."""
    directory, source, resolved_revision = resolve_checkpoint(model, revision=revision)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{directory} has no config.json; it is not a save_pretrained checkpoint")
    try:
        raw_config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"Cannot read {config_path}: {exc}") from exc
    if raw_config.get("model_type") != "xclip":
        raise CheckpointError(
            f"{directory} is a '{raw_config.get('model_type')}' checkpoint, not X-CLIP (model_type 'xclip')"
        )
    _check_weights_format(directory)

    import torch
    from transformers import AutoTokenizer, XCLIPModel
    from transformers.utils import logging as hf_logging

    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        # bfloat16 keeps float32 weights and runs under autocast (`XClipEncoder`): matrix products in bfloat16,
        # layer norms, softmax and reductions in float32. float16 casts the weights, as before.
        weights = torch.float32 if dt == torch.bfloat16 else dt
        net = XCLIPModel.from_pretrained(directory, use_safetensors=True, dtype=weights)
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise CheckpointError(f"Cannot load X-CLIP from {directory}: {exc}".split("\n")[0]) from exc
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    net.eval().to(dev)
    vcfg: Any = net.config.vision_config
    num_frames = int(vcfg.num_frames)
    image_size = int(vcfg.image_size if isinstance(vcfg.image_size, int) else vcfg.image_size[0])
    patch = int(vcfg.patch_size if isinstance(vcfg.patch_size, int) else vcfg.patch_size[0])
    pixels = PixelConfig.from_pretrained_dir(directory, image_size=image_size)
    if pixels.output_size(image_size, image_size) != (image_size, image_size):
        raise CheckpointError(
            f"preprocessor_config.json crops to {pixels.crop}, but the model expects {image_size} px frames"
        )
    identity = ModelIdentity(
        source=source,
        revision=resolved_revision,
        config_hash=config_hash(net.config.to_dict(), pixels),
        num_frames=num_frames,
        image_size=image_size,
        embed_dim=int(net.config.projection_dim),
        num_tokens=(image_size // patch) ** 2,
    )
    return Checkpoint(
        model=net,
        tokenizer=tokenizer,
        pixels=pixels,
        identity=identity,
        directory=directory,
        device=dev,
        dtype=dt,
    )
