"""``T5ForConditionalGeneration`` built from a fresh ``T5Config`` (no pretrained weights).

Presets:

* ``micro`` - 1+1 layers, d_model 32: unit tests only.
* ``tiny`` - 2+2 layers, d_model 128, d_ff 512, 4 heads: trains usefully on 2 CPU cores
  (umls in minutes).
* ``small`` - the paper's t5-small: 6+6 layers, d_model 512, d_ff 2048, 8 heads (~60M parameters
  with a 32k vocabulary).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from .tokenizer import EOS_ID, PAD_ID

PRESETS: dict[str, dict] = {
    "micro": dict(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=4,
                  dropout_rate=0.0, relative_attention_num_buckets=8, relative_attention_max_distance=32),
    "tiny": dict(d_model=128, d_kv=32, d_ff=512, num_layers=2, num_decoder_layers=2, num_heads=4,
                 dropout_rate=0.1),
    "small": dict(d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6, num_heads=8,
                  dropout_rate=0.1),
}
MODEL_CONFIG_FILE = "model_config.json"


def make_config(vocab_size: int, preset: str = "tiny", **overrides):
    """A ``T5Config`` for ``preset`` with T5 special ids (pad = decoder start = 0, eos = 1)."""
    from transformers import T5Config

    if preset not in PRESETS:
        raise ValueError(f"unknown KGT5 preset {preset!r}; choose from {sorted(PRESETS)}")
    kw = dict(PRESETS[preset])
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return T5Config(vocab_size=int(vocab_size), pad_token_id=PAD_ID, eos_token_id=EOS_ID,
                    decoder_start_token_id=PAD_ID, **kw)


def build_model(vocab_size: int, preset: str = "tiny", seed: Optional[int] = None, **overrides):
    """Randomly initialised ``T5ForConditionalGeneration``."""
    import torch
    from transformers import T5ForConditionalGeneration

    if seed is not None:
        torch.manual_seed(seed)
    return T5ForConditionalGeneration(make_config(vocab_size, preset, **overrides))


def save_model_config(model, folder: str | Path) -> None:
    Path(folder, MODEL_CONFIG_FILE).write_text(model.config.to_json_string())


def model_from_folder(folder: str | Path, weights: str | Path):
    """Rebuild from ``model_config.json`` and load a safetensors ``weights`` file."""
    from transformers import T5Config, T5ForConditionalGeneration

    from .train import load_weights

    cfg = T5Config.from_json_file(str(Path(folder) / MODEL_CONFIG_FILE))
    model = T5ForConditionalGeneration(cfg)
    load_weights(model, Path(weights))
    return model.eval()


def num_parameters(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
