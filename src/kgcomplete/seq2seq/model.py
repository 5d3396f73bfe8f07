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

#: ``attention_mask`` value of context tokens for a query-attention model (:func:`query_attention_t5`):
#: the encoder reads them, the decoder does not attend to them (query tokens are 1, padding 0)
CONTEXT_MASK = 2
#: the ``T5Config`` attribute (saved in model_config.json) that selects :func:`query_attention_t5`
QUERY_ATTENTION = "kgt5_query_attention"

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


def query_attention_t5():
    """``T5ForConditionalGeneration`` whose decoder attends only to the query tokens
    (``attention_mask == 1``) while the encoder reads query and context tokens (``> 0``):
    ``kgt5.context_attention: query``. The context reaches the answer only through the encoder's
    self-attention into the query tokens. Measured on umls (tiny, 1 thread, valid MRR on 200
    triples): 3 context lines, .38 after 3 epochs and .50 after 6; with full attention .23 after 3
    (3 lines) and .22 after 6 (8 lines) (docs/kgt5.md). Works through ``forward`` and
    ``get_encoder`` (what the decoders call)."""
    import torch
    from transformers import T5ForConditionalGeneration

    class _EncoderReadsAll(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            mask = None if attention_mask is None else (attention_mask > 0).long()
            return self.encoder(input_ids=input_ids, attention_mask=mask, **kwargs)

    class QueryAttentionT5(T5ForConditionalGeneration):
        def get_encoder(self, *args, **kwargs):
            return _EncoderReadsAll(self.encoder)

        def forward(self, input_ids=None, attention_mask=None, encoder_outputs=None, **kwargs):
            if attention_mask is not None:
                if encoder_outputs is None and input_ids is not None:
                    encoder_outputs = self.encoder(input_ids=input_ids, attention_mask=(attention_mask > 0).long(),
                                                   return_dict=True)
                    input_ids = None
                attention_mask = (attention_mask == 1).long()
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, encoder_outputs=encoder_outputs,
                                   **kwargs)

    return QueryAttentionT5


def _model_class(cfg):
    from transformers import T5ForConditionalGeneration

    return query_attention_t5() if getattr(cfg, QUERY_ATTENTION, False) else T5ForConditionalGeneration


def build_model(vocab_size: int, preset: str = "tiny", seed: Optional[int] = None, query_attention: bool = False,
                **overrides):
    """Randomly initialised ``T5ForConditionalGeneration`` (:func:`query_attention_t5` with
    ``query_attention``)."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    cfg = make_config(vocab_size, preset, **overrides)
    if query_attention:
        setattr(cfg, QUERY_ATTENTION, True)
    return _model_class(cfg)(cfg)


def save_model_config(model, folder: str | Path) -> None:
    Path(folder, MODEL_CONFIG_FILE).write_text(model.config.to_json_string())


def model_from_folder(folder: str | Path, weights: str | Path):
    """Rebuild from ``model_config.json`` and load a safetensors ``weights`` file."""
    from transformers import T5Config

    from .train import load_weights

    cfg = T5Config.from_json_file(str(Path(folder) / MODEL_CONFIG_FILE))
    model = _model_class(cfg)(cfg)
    load_weights(model, Path(weights))
    return model.eval()


def num_parameters(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
