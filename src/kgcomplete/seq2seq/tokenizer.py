"""Subword tokenizers for KGT5: a Unigram (SentencePiece-style) model trained on the KG's own strings,
or a T5 tokenizer loaded from a local folder.

Both follow T5's id convention: ``<pad>`` = 0 (also the decoder start token), ``</s>`` = 1, ``<unk>`` = 2.
"""

from __future__ import annotations

from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
SPECIAL_TOKENS = ["<pad>", "</s>", "<unk>"]
TOKENIZER_FILE = "tokenizer.json"


class KGTokenizer:
    """Thin wrapper over a Hugging Face ``tokenizers.Tokenizer`` (Rust, batch encoding).

    ``encode(texts, eos=True) -> LongTensor (n, L)`` right-padded with ``PAD_ID``;
    ``decode(ids (n, L)) -> list[str]``.
    """

    def __init__(self, tokenizer):
        self.tok = tokenizer  # tokenizers.Tokenizer
        for i, t in enumerate(SPECIAL_TOKENS):
            if self.tok.token_to_id(t) != i:
                raise ValueError(f"tokenizer must map {t!r} to id {i} (T5 convention)")

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def __len__(self) -> int:
        return self.vocab_size

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8000, model: str = "bpe") -> "KGTokenizer":
        """Train a SentencePiece-style subword model (NFKC, Metaspace ``▁`` word prefix) on ``texts``.

        ``model``: ``bpe`` (default: on small KGs it keeps frequent whole words as single pieces) or
        ``unigram`` (HF's Unigram trainer over-segments small corpora). Every character of the corpus
        stays encodable; the vocabulary may end up smaller than ``vocab_size`` on small KGs.
        """
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        texts = list(texts)
        if model == "unigram":
            tok = Tokenizer(models.Unigram())
            trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                              unk_token="<unk>", show_progress=False, max_piece_length=16)
        elif model == "bpe":
            tok = Tokenizer(models.BPE(unk_token="<unk>"))
            trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False)
        else:
            raise ValueError(f"unknown tokenizer model {model!r}: bpe | unigram")
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: str | Path) -> "KGTokenizer | HFTokenizer":
        """``tokenizer.json`` file, a folder holding one, or a (T5) tokenizer folder for ``transformers``."""
        from tokenizers import Tokenizer

        path = Path(path)
        f = path if path.is_file() else path / TOKENIZER_FILE
        if f.is_file():
            try:
                return cls(Tokenizer.from_file(str(f)))
            except ValueError:
                pass
        return HFTokenizer.from_folder(path)

    def save(self, folder: str | Path) -> None:
        self.tok.save(str(Path(folder) / TOKENIZER_FILE))

    def _encode_lists(self, texts: Sequence[str]) -> list[list[int]]:
        return list(map(attrgetter("ids"), self.tok.encode_batch(list(texts), add_special_tokens=False)))

    def encode(self, texts: Sequence[str], eos: bool = True, max_length: int | None = None) -> torch.Tensor:
        """``(n,)`` strings -> ``(n, L)`` int64 ids, right-padded; ``</s>`` appended when ``eos``."""
        return pad_lists(self._encode_lists(texts), eos, max_length)

    def encode_flat(self, texts: Sequence[str], eos: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``(n,)`` strings -> all their ids in one flat int32 array and ``(n,)`` int64 lengths
        (``</s>`` ending each sequence when ``eos``): no padded table, for millions of texts."""
        return flatten_lists(self._encode_lists(texts), eos)

    def decode(self, ids) -> list[str]:
        """``(n, L)`` ids -> strings (special tokens dropped)."""
        ids = torch.as_tensor(ids).tolist()
        return self.tok.decode_batch([[i for i in row if i > UNK_ID] for row in ids])


class HFTokenizer(KGTokenizer):
    """A ``transformers`` tokenizer (e.g. a local ``t5-small`` folder) behind the same interface."""

    def __init__(self, hf_tokenizer, source: str = ""):
        self.hf = hf_tokenizer
        self.source = source
        if hf_tokenizer.pad_token_id != PAD_ID or hf_tokenizer.eos_token_id != EOS_ID:
            raise ValueError("tokenizer must use pad=0 and eos=1 (T5 convention)")

    @classmethod
    def from_folder(cls, folder: str | Path) -> "HFTokenizer":
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(folder), local_files_only=True), str(folder))

    @property
    def vocab_size(self) -> int:
        return len(self.hf)

    def save(self, folder: str | Path) -> None:
        self.hf.save_pretrained(str(folder))

    def _encode_lists(self, texts: Sequence[str]) -> list[list[int]]:
        return self.hf(list(texts), add_special_tokens=False)["input_ids"]

    def decode(self, ids) -> list[str]:
        return self.hf.batch_decode(torch.as_tensor(ids).tolist(), skip_special_tokens=True)


def flatten_lists(lists: list[list[int]], eos: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Ragged id lists -> ``(flat int32, lengths int64)``, ``</s>`` appended to each list when ``eos``
    (C-level iteration: ``map(len)`` and ``chain``, no Python loop per list)."""
    lens = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    flat = np.fromiter(chain.from_iterable(lists), dtype=np.int32, count=int(lens.sum()))
    if not eos:
        return flat, lens
    out = np.full(len(flat) + len(lists), EOS_ID, dtype=np.int32)
    ends = np.cumsum(lens + 1)  # exclusive end of each sequence, </s> included
    keep = np.ones(len(out), bool)
    keep[ends - 1] = False
    out[keep] = flat
    return out, lens + 1


def pad_lists(lists: list[list[int]], eos: bool = True, max_length: int | None = None) -> torch.Tensor:
    """Ragged id lists -> ``(n, L)`` int64 right-padded with ``PAD_ID`` (truncated to ``max_length``,
    keeping the final ``</s>``)."""
    full = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    lens = full if max_length is None else np.minimum(full, max_length - int(eos))
    width = int(lens.max(initial=0)) + int(eos)
    out = np.full((len(lists), max(width, 1)), PAD_ID, dtype=np.int64)
    flat = np.fromiter(chain.from_iterable(lists), dtype=np.int64, count=int(full.sum()))
    cols = np.arange(len(flat)) - np.repeat(np.cumsum(full) - full, full)  # position within its list
    rows = np.repeat(np.arange(len(lists)), full)
    keep = cols < np.repeat(lens, full)  # truncation: the first lens[i] ids of list i
    out[rows[keep], cols[keep]] = flat[keep]
    if eos:
        out[np.arange(len(lists)), lens] = EOS_ID
    return torch.from_numpy(out)


def build_tokenizer(corpus: Sequence[str], source: str | None = None, vocab_size: int = 8000,
                    model: str = "bpe") -> KGTokenizer:
    """``source`` None/"train": train a ``model`` (bpe | unigram) on ``corpus``; otherwise a local
    tokenizer folder/file to load (e.g. a T5 tokenizer)."""
    if source in (None, "", "train", "kg"):
        return KGTokenizer.train(corpus, vocab_size=vocab_size, model=model)
    return KGTokenizer.load(source)
