"""Published KGT5 checkpoints: a model in the Hugging Face layout opened as a run (``kgc kgt5 import``),
and a trained run written in that layout (``kgc kgt5 export``).

A checkpoint folder (e.g. ``apoorvumang/kgt5-wikikg90mv2``, ``apoorvumang/kgt5-base-wikidata5m``)::

    config.json                       a T5 (T5ForConditionalGeneration; pad = decoder start = 0, </s> = 1)
    model.safetensors | pytorch_model.bin   (or shards with their *.index.json)
    tokenizer.json | spiece.model     a `tokenizers` or SentencePiece tokenizer (+ tokenizer_config.json ...)
    [kgt5.json entity_strings.tsv relation_strings.tsv]   what ``kgc kgt5 export`` adds

plus the entity and relation strings the model was trained on (one per line in the dataset's id
order, or ``label<TAB>string``). :func:`import_checkpoint` writes a run folder::

    config.yaml        model.name kgt5, data.source (the dataset; none: the strings are the graph),
                       kgt5.decoding / max_length
    pretrained.json    input templates, the source folder, how each weights file was placed, counts
    hf/                config.json and the tokenizer files (copied); the weights hard-linked to the
                       source's files (no copy; the link survives the source being moved or deleted),
                       copied when the run is on another file system
    entity_texts/      the entity strings (:class:`~kgcomplete.seq2seq.strings.StringTable`, memory-mapped)
    relation_texts.json
    trie/              tokens.npy offsets.npy (entity token ids, </s> included) and the trie arrays
                       (:class:`~kgcomplete.seq2seq.trie.EntityTrie`, memory-mapped)
    entities.tsv relations.tsv [splits/, entity_names.tsv]   (RunFolder.create)
    metrics.json

:class:`PretrainedKGT5Run` opens it (``kgcomplete.load_run``, ``kgc evaluate / predict / serve``):
inputs are the template filled with the anchor's and the relation's strings and tokenised whole
(:class:`TemplateEncoder`), decoding is constrained to the entity trie, and evaluation and top-k
rank the decoded entities directly (:func:`~kgcomplete.seq2seq.decoding.evaluate_generated`), so
no ``(queries, entities)`` score matrix is ever built. Nothing per entity is a Python object.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from ..atomic import atomic_write_text
from ..runs.files import RunFolder, atomic_write_json
from .run import KGT5Run, resolve_config
from .strings import NpyWriter, StringTable
from .tokenizer import EOS_ID, PAD_ID, KGTokenizer
from .trie import EntityTrie, RaggedTokens, token_dtype
from .verbalize import fill_template, template_parts

PRETRAINED_FILE = "pretrained.json"
EXPORT_FILE = "kgt5.json"
HF_DIR, TRIE_DIR, ENTITY_TEXTS_DIR, RELATION_TEXTS = "hf", "trie", "entity_texts", "relation_texts.json"
#: input templates (tail query, head query or None) of the published checkpoints
TEMPLATES: dict[str, tuple[str, Optional[str]]] = {
    # this library's KGT5 and apoorvumang/kgt5 (Wikidata5M): both directions
    "kgt5": ("predict tail: {entity} | {relation}", "predict head: {entity} | {relation}"),
    # apoorvumang/kgt5-wikikg90mv2: tail prediction only, "<entity text>| <relation text>"
    "wikikg90mv2": ("{entity}| {relation}", None),
}
#: tokenizer and configuration files copied from a checkpoint folder
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "generation_config.json")
#: weights files, in order of preference: (single file, index of shards)
WEIGHTS = (("model.safetensors", "model.safetensors.index.json"), ("pytorch_model.bin", "pytorch_model.bin.index.json"))
#: strings tokenised / written at once while importing
BLOCK = 1 << 18


# ------------------------------------------------------------------ templates and inputs
def parse_template(template: str) -> list[tuple[str, Optional[str]]]:
    """``"predict tail: {entity} | {relation}"`` -> :func:`template_parts` of it, with both fields
    exactly once."""
    parts = template_parts(template, ("entity", "relation"))
    if sorted(f for _, f in parts if f is not None) != ["entity", "relation"]:
        raise ValueError(f"template {template!r}: needs {{entity}} and {{relation}}, once each and nothing else "
                         f"in braces (write {{{{ and }}}} for literal braces)")
    return parts


class CheckpointTexts:
    """Entity strings (a memory-mapped :class:`StringTable`: ``entity[ids]``) and relation strings
    (``(R,)`` object array); :meth:`lookup` maps entity strings to ids (exact, -1 if none)."""

    def __init__(self, entity: StringTable, relation: np.ndarray):
        self.entity, self.relation = entity, np.asarray(relation, dtype=object)

    def __len__(self) -> int:
        return len(self.entity)

    def lookup(self, texts) -> np.ndarray:
        arr = np.asarray(texts, dtype=object)
        return self.entity.lookup(np.array([str(t).strip() for t in arr.ravel()], dtype=object)).reshape(arr.shape)


class TemplateEncoder:
    """Model inputs of a checkpoint: its template filled with the anchor's and the relation's
    strings, tokenised whole (as ``tokenizer(text)`` in the seed code: ids, then ``</s>``; cut at
    ``max_length``). ``entity_ids``: the entity token sequences (:class:`RaggedTokens`, the
    teacher-forcing targets of candidate scoring)."""

    def __init__(self, tokenizer: KGTokenizer, texts: CheckpointTexts, tail_template: str,
                 head_template: Optional[str], max_length: int, entity_ids: RaggedTokens):
        self.tokenizer, self.texts, self.max_length, self.entity_ids = tokenizer, texts, int(max_length), entity_ids
        self.templates = {False: parse_template(tail_template),
                          True: parse_template(head_template) if head_template else None}

    @property
    def directions(self) -> tuple[str, ...]:
        return ("head", "tail") if self.templates[True] is not None else ("tail",)

    def fill(self, entity: np.ndarray, relation, head: bool) -> np.ndarray:
        """``(B,)`` entity strings and relation ids -> ``(B,)`` input strings of the query side ``head``."""
        parts = self.templates[bool(head)]
        if parts is None:
            raise ValueError("this checkpoint answers tail queries (h, r, ?) only: it has no head-query template "
                             "(import it with --head-template to ask (?, r, t))")
        r = np.asarray(torch.as_tensor(relation).cpu(), dtype=np.int64).ravel()
        return fill_template(parts, {"entity": entity, "relation": self.texts.relation[r]})

    def input_text(self, anchor, relation, head: bool) -> np.ndarray:
        """``(B,)`` anchor and relation ids -> ``(B,)`` input strings."""
        a = np.asarray(torch.as_tensor(anchor).cpu(), dtype=np.int64).ravel()
        return self.fill(self.texts.entity[a], relation, head)

    def encode_strings(self, strings: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Input strings -> ``input_ids (B, L)`` (``</s>`` appended, cut at ``max_length``), ``attention_mask``."""
        ids = self.tokenizer.encode(list(strings), eos=True, max_length=self.max_length)
        return ids, (ids != PAD_ID).long()

    def queries(self, anchor, relation, head: bool, exclude=None, sample=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B,)`` anchor/relation ids -> ``input_ids (B, L)``, ``attention_mask (B, L)``."""
        return self.encode_strings(self.input_text(anchor, relation, head))


# ------------------------------------------------------------------ reading strings files
def _line_blocks(path: Path, block_bytes: int = 1 << 26) -> Iterator[tuple[int, list[str]]]:
    """``(first line number, lines)`` blocks of a UTF-8 text file (``\\r\\n`` accepted)."""
    line = 1
    rest = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(block_bytes)
            data = rest + chunk
            if chunk:
                cut = data.rfind(b"\n")
                if cut < 0:
                    rest = data
                    continue
                data, rest = data[:cut], data[cut + 1:]
            elif not data:
                return
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                bad_line = line + data[:e.start].count(b"\n")
                raise ValueError(f"{path}, line {bad_line}: not UTF-8 text") from None
            lines = text.replace("\r\n", "\n").split("\n")
            yield line, lines
            line += len(lines)
            if not chunk:
                return


def _is_labeled(path: Path) -> bool:
    """Whether the strings file has ``label<TAB>string`` lines (its first line holds a tab)."""
    with open(path, "rb") as f:
        return b"\t" in f.readline()


def _check_lines(path: Path, first: int, lines: Sequence[str], what: str) -> None:
    empty = np.flatnonzero(np.asarray(lines, dtype=object) == "")
    if len(empty):
        raise ValueError(f"{path}, line {first + int(empty[0])}: empty {what} string")


def read_labeled(path: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``label<TAB>string`` lines -> (labels, strings) object arrays (in memory)."""
    labels, texts = [], []
    for first, lines in _line_blocks(path):
        frame = pd.Series(lines, dtype=object).str.split("\t", n=1, expand=True)
        if frame.shape[1] < 2 or frame[1].isna().any():
            bad = 0 if frame.shape[1] < 2 else int(np.flatnonzero(frame[1].isna().to_numpy())[0])
            raise ValueError(f"{path}, line {first + bad}: expected label<TAB>{what} string (the file's first line has a tab)")
        _check_lines(path, first, frame[1].tolist(), what)
        labels.append(frame[0].to_numpy(dtype=object))
        texts.append(frame[1].to_numpy(dtype=object))
    if not labels:
        raise ValueError(f"{path}: no {what} strings")
    labels, texts = np.concatenate(labels), np.concatenate(texts)
    dup = pd.Index(labels).duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise ValueError(f"{path}, line {i + 1}: label {labels[i]!r} appears twice")
    return labels, texts


def plain_blocks(path: Path, what: str) -> Iterator[list[str]]:
    """One string a line (line i = id i), streamed in blocks."""
    for first, lines in _line_blocks(path):
        _check_lines(path, first, lines, what)
        yield lines


def strings_by_id(path: Path, vocab, what: str) -> np.ndarray:
    """``(n,)`` strings in the vocabulary's id order, from a plain or a labeled file (in memory)."""
    if _is_labeled(path):
        labels, texts = read_labeled(path, what)
        ids = vocab.encode(labels)
        if (ids < 0).any():
            i = int(np.flatnonzero(ids < 0)[0])
            raise ValueError(f"{path}, line {i + 1}: {what} label {labels[i]!r} is not in the dataset")
        if len(ids) != len(vocab):
            missing = np.setdiff1d(np.arange(len(vocab)), ids)[:5]
            raise ValueError(f"{path}: {len(vocab) - len(ids)} {what}s of the dataset have no string, e.g. "
                             f"{vocab.labels[missing].tolist()}")
        out = np.empty(len(vocab), dtype=object)
        out[ids] = texts
        return out
    texts = np.concatenate([np.asarray(b, dtype=object) for b in plain_blocks(path, what)] or [np.zeros(0, object)])
    if len(texts) != len(vocab):
        raise ValueError(f"{path}: {len(texts)} {what} strings (one a line, in id order) for the dataset's "
                         f"{len(vocab)} {what}s")
    return texts


# ------------------------------------------------------------------ checkpoint folders
def checkpoint_files(folder: Path) -> tuple[list[str], list[str]]:
    """(weights files, tokenizer/config files) of a checkpoint folder; one-line errors for what is missing."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such checkpoint folder")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json (a Hugging Face model folder has one)")
    weights = None
    for single, index in WEIGHTS:
        if (folder / index).is_file():
            try:
                shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            except (ValueError, KeyError, AttributeError) as e:
                raise ValueError(f"{folder / index}: not a weights index ({e})") from None
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise FileNotFoundError(f"{folder / index} lists {missing[0]}, which is missing")
            weights = [index, *shards]
            break
        if (folder / single).is_file():
            weights = [single]
            break
    if weights is None:
        raise FileNotFoundError(f"{folder}: no model weights (model.safetensors or pytorch_model.bin)")
    tok = [f for f in TOKENIZER_FILES if (folder / f).is_file()]
    if "tokenizer.json" not in tok and "spiece.model" not in tok:
        raise FileNotFoundError(f"{folder}: no tokenizer (tokenizer.json or a SentencePiece spiece.model)")
    return weights, tok


def t5_config(folder: Path):
    """The checkpoint's ``T5Config``, checked: a T5 with T5's special ids (decoding relies on them)."""
    from transformers import T5Config

    raw = json.loads((folder / "config.json").read_text())
    if raw.get("model_type") not in ("t5", "mt5"):
        raise ValueError(f"{folder / 'config.json'}: model_type {raw.get('model_type')!r}; KGT5 checkpoints are T5 models")
    cfg = T5Config.from_json_file(str(folder / "config.json"))
    got = {"pad_token_id": cfg.pad_token_id, "eos_token_id": cfg.eos_token_id,
           "decoder_start_token_id": cfg.decoder_start_token_id}
    want = {"pad_token_id": PAD_ID, "eos_token_id": EOS_ID, "decoder_start_token_id": PAD_ID}
    bad = {k: v for k, v in got.items() if v is not None and v != want[k]}
    if bad:
        raise ValueError(f"{folder / 'config.json'}: {bad}; decoding expects T5's ids {want}")
    return cfg


def fast_tokenizer(tok: KGTokenizer, folder: Path, sample: Sequence[str]) -> tuple[KGTokenizer, bool]:
    """A checkpoint with only ``spiece.model`` opens through ``transformers`` (a Python call per
    string); when that tokenizer is a fast one, write its ``tokenizer.json`` into ``folder`` and use
    it directly if it gives the same ids on ``sample``. Returns (tokenizer, whether converted)."""
    from .tokenizer import HFTokenizer

    if not isinstance(tok, HFTokenizer) or not getattr(tok.hf, "is_fast", False) or (folder / "tokenizer.json").exists():
        return tok, False
    tok.hf.backend_tokenizer.save(str(folder / "tokenizer.json"))
    try:
        raw = KGTokenizer.load(folder)
        same = not isinstance(raw, HFTokenizer) and torch.equal(raw.encode(list(sample)), tok.encode(list(sample)))
    except ValueError:
        same = False
    if same:
        return raw, True
    (folder / "tokenizer.json").unlink()
    return tok, False


def place_file(src: Path, dst: Path, mode: str) -> str:
    """Put ``src`` at ``dst``: ``link`` makes a hard link (no copy; it survives ``src`` being moved
    or deleted) and falls back to a copy across file systems; ``copy`` copies. Returns how."""
    if mode == "link":
        try:
            os.link(src.resolve(), dst)
            return "hardlink"
        except OSError:  # another file system, or links not allowed there
            pass
    shutil.copyfile(src.resolve(), dst)
    return "copy"


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No progress bars from ``transformers`` while weights are read or written."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load_model(folder: Path, device: Optional[str] = None):
    """``T5ForConditionalGeneration`` from a checkpoint folder, in eval mode on ``device``."""
    from transformers import T5ForConditionalGeneration

    from ..device import resolve_device

    with quiet_transformers():
        model = T5ForConditionalGeneration.from_pretrained(str(folder), local_files_only=True)
    return model.eval().to(resolve_device(device or "auto"))


def _graph(entities: Path, relations: Path, dataset: Optional[str], texts_dir: Path, name: str):
    """(dataset, data.source, entity StringTable written to ``texts_dir``, relation strings): the
    given dataset, or a graph of the strings alone (no triples; the strings are also the names)."""
    if dataset is not None:
        from ..data.registry import load_dataset

        ds = load_dataset(dataset)
        source = str(Path(dataset).resolve()) if Path(dataset).expanduser().exists() else str(dataset)
        rel_texts = strings_by_id(relations, ds.relations, "relation")
        if _is_labeled(entities):
            return ds, source, StringTable.from_strings(texts_dir, strings_by_id(entities, ds.entities, "entity"), BLOCK), rel_texts
        table = StringTable.write(texts_dir, plain_blocks(entities, "entity"))  # streamed: any number of entities
        if len(table) != ds.num_entities:
            raise ValueError(f"{entities}: {len(table)} entity strings (one a line, in id order) for the "
                             f"dataset's {ds.num_entities} entities")
        return ds, source, table, rel_texts
    from ..data.dataset import Dataset
    from ..data.vocabulary import Vocabulary

    if _is_labeled(entities):
        ent_labels, ent_texts = read_labeled(entities, "entity")
        table = StringTable.from_strings(texts_dir, ent_texts, BLOCK)
    else:
        table = StringTable.write(texts_dir, plain_blocks(entities, "entity"))
        ent_labels = np.arange(len(table)).astype(str).astype(object)
    if _is_labeled(relations):
        rel_labels, rel_texts = read_labeled(relations, "relation")
    else:
        rel_texts = rel_labels = np.concatenate([np.asarray(b, dtype=object) for b in plain_blocks(relations, "relation")]
                                                or [np.zeros(0, object)])
    if not len(table) or not len(rel_texts):
        raise ValueError(f"{entities if not len(table) else relations}: no strings")
    ds = Dataset(name=name, entities=Vocabulary(ent_labels), relations=Vocabulary(rel_labels),
                 splits={"train": np.zeros((0, 3), np.int64)}, entity_names=table.get(np.arange(len(table))),
                 relation_names=rel_texts)
    return ds, None, table, rel_texts


def _entity_trie(tok: KGTokenizer, table: StringTable, vocab_size: int, folder: Path, src: Path) -> EntityTrie:
    """Tokenise the entity strings block by block into ``folder/tokens.npy`` + ``offsets.npy``
    (``</s>`` included), then build and save the trie from them (both memory-mapped later)."""
    folder.mkdir()
    lengths = []
    with NpyWriter(folder / "tokens.npy", token_dtype(vocab_size)) as w:
        for s in range(0, len(table), BLOCK):
            flat, ln = tok.encode_flat(table.get(np.arange(s, min(s + BLOCK, len(table)))).tolist(), eos=True)
            if len(flat) and int(flat.max()) >= vocab_size:
                raise ValueError(f"{src}: the tokenizer gives token id {int(flat.max())}, beyond the model's "
                                 f"vocabulary ({vocab_size})")
            w.append(flat)
            lengths.append(ln)
    np.save(folder / "offsets.npy", np.concatenate([[0], np.cumsum(np.concatenate(lengths or [np.zeros(0, np.int64)]))]))
    trie = EntityTrie.from_ragged(RaggedTokens.open(folder), vocab_size, duplicates="first")
    trie.save(folder)
    return trie


# ------------------------------------------------------------------ import
def import_checkpoint(hf_folder: str | Path, out: str | Path, entities: Optional[str | Path] = None,
                      relations: Optional[str | Path] = None, dataset: Optional[str] = None,
                      template: Optional[str] = None, tail_template: Optional[str] = None,
                      head_template: Optional[str] = None, weights: str = "link", max_length: Optional[int] = None,
                      decoding: Optional[dict] = None, log=print) -> Path:
    """Write a run folder for the checkpoint ``hf_folder`` (see the module docstring); returns it.

    Args:
        entities, relations: the strings files (default: the folder's ``entity_strings.tsv`` /
            ``relation_strings.tsv`` from ``kgc kgt5 export``). One string a line in the dataset's
            id order (streamed: any size), or ``label<TAB>string`` lines (held in memory).
        dataset: a registered name or folder whose splits the run evaluates (its entities must
            match the strings); None: the strings alone make the graph (labels ``0..n-1`` for
            plain files), for ``predict`` and ``serve``.
        template: a name of :data:`TEMPLATES` (default: the folder's ``kgt5.json``, else ``kgt5``);
            ``tail_template`` / ``head_template`` override it (``head_template=""``: tails only).
        weights: ``link`` (hard links, copies across file systems) or ``copy``.
        max_length: input tokens kept (default: the folder's ``kgt5.json``, else 128).
        decoding: ``kgt5.decoding`` options (method, beam_size, num_samples, ...).
        log: where progress lines go.
    """
    t0 = time.time()
    src, out = Path(hf_folder), Path(out)
    weight_files, tok_files = checkpoint_files(src)
    if weights not in ("link", "copy"):
        raise ValueError(f"weights={weights!r}: link | copy")
    exported = json.loads((src / EXPORT_FILE).read_text()) if (src / EXPORT_FILE).is_file() else {}
    entities = Path(entities) if entities else src / exported.get("entities", "entity_strings.tsv")
    relations = Path(relations) if relations else src / exported.get("relations", "relation_strings.tsv")
    for p, what in ((entities, "entities"), (relations, "relations")):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no strings file of the {what} (give --{what})")
    if template is not None and template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}: {' | '.join(TEMPLATES)} (or --tail-template/--head-template)")
    tail_t, head_t = TEMPLATES[template] if template else (
        (exported["tail_template"], exported.get("head_template")) if "tail_template" in exported else TEMPLATES["kgt5"])
    tail_t = tail_template if tail_template is not None else tail_t
    head_t = (head_template or None) if head_template is not None else head_t
    parse_template(tail_t)
    if head_t:
        parse_template(head_t)
    model_cfg = t5_config(src)
    max_length = int(max_length or exported.get("max_length") or 128)
    RunFolder(out).check_target()
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; import into a new folder")

    stage = out.with_name(f".{out.name}.importing-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    (stage / HF_DIR).mkdir(parents=True)
    try:
        shutil.copyfile(src / "config.json", stage / HF_DIR / "config.json")
        for f in tok_files:
            shutil.copyfile(src / f, stage / HF_DIR / f)
        placed = {}
        for f in weight_files:
            how = place_file(src / f, stage / HF_DIR / f, weights)
            placed[f] = {"size": (src / f).stat().st_size, "placed": how}
        log("weights: " + ", ".join(f"{f} ({v['placed']})" for f, v in placed.items()))
        tok = KGTokenizer.load(stage / HF_DIR)
        V = int(model_cfg.vocab_size)
        if tok.vocab_size > V:
            raise ValueError(f"{src}: the tokenizer has {tok.vocab_size} tokens, the model's vocabulary {V}")

        ds, source, table, rel_texts = _graph(entities, relations, dataset, stage / ENTITY_TEXTS_DIR, src.name)
        log(f"entities: {len(table):,} strings; relations: {len(rel_texts):,}")
        atomic_write_json(stage / RELATION_TEXTS, rel_texts.tolist())

        sample = [*table.get(np.arange(min(len(table), 10_000))).tolist(), *rel_texts.tolist(),
                  *fill_template(parse_template(tail_t), {"entity": table.get(np.zeros(len(rel_texts), np.int64)),
                                                          "relation": rel_texts})]
        tok, converted = fast_tokenizer(tok, stage / HF_DIR, sample)
        if converted:
            log("tokenizer: tokenizer.json written from the SentencePiece model (the same ids, several times faster)")
        trie = _entity_trie(tok, table, V, stage / TRIE_DIR, src)
        if trie.shadowed:
            log(f"warning: {trie.shadowed:,} entities share their token sequence with an entity of a smaller id "
                f"(e.g. both only <unk>); they can never be generated and rank among the unseen")
        log(f"trie: {trie.num_nodes:,} nodes, depth {trie.depth}, {trie.nbytes() / 2**20:.1f} MiB")

        model = load_model(stage / HF_DIR, "cpu")  # the weights load and fit the config: checked now, not at first use
        n_params = sum(p.numel() for p in model.parameters())
        del model

        dec = {"method": "beam", "beam_size": 50, **(decoding or {})}
        cfg = resolve_config({"data": {"source": source}, "model": {"name": "kgt5"},
                              "kgt5": {"max_length": max_length, "decoding": dec}})
        meta = {"format": 1, "source": str(src.resolve()), "weights": placed, "tokenizer": tok_files,
                "tail_template": tail_t, "head_template": head_t, "entities_file": str(entities.resolve()),
                "relations_file": str(relations.resolve()), "num_entities": len(table), "num_relations": len(rel_texts),
                "vocab_size": V, "shadowed_entities": trie.shadowed, "trie_nodes": trie.num_nodes,
                "tokenizer_json_converted": converted}
        atomic_write_json(stage / PRETRAINED_FILE, meta)
        atomic_write_json(stage / "metrics.json", {"model": "kgt5", "imported_from": str(src.resolve()),
                                                   "parameters": int(n_params), "import_time_s": time.time() - t0})
        RunFolder(stage).create(cfg, ds)  # vocabularies, the names of a graph without dataset, config.yaml last
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    log(f"run: {out} ({time.time() - t0:.1f}s)")
    return out


# ------------------------------------------------------------------ the run
class PretrainedKGT5Run(KGT5Run):
    """A run of an imported checkpoint: a :class:`~kgcomplete.seq2seq.run.KGT5Run` whose inputs come
    from templates and whose texts and trie are memory-mapped (evaluation and top-k rank the decoded
    entities, as for every KGT5 run; ``directions`` is ``("tail",)`` without a head template)."""

    meta: dict

    @classmethod
    def load(cls, path: str | Path, dataset=None, device: Optional[str] = None, **_) -> "PretrainedKGT5Run":
        from ..config import read_yaml
        from ..data.vocabulary import Vocabulary

        path = Path(path)
        try:
            meta = json.loads((path / PRETRAINED_FILE).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path / PRETRAINED_FILE}: damaged ({e})") from None
        for f, info in meta["weights"].items():
            p = path / HF_DIR / f
            if not p.is_file():
                raise FileNotFoundError(f"{p}: missing (imported from {meta['source']}); import the checkpoint again")
            if p.stat().st_size != info["size"]:
                raise ValueError(f"{p}: {p.stat().st_size} bytes, imported with {info['size']}; damaged or replaced")
        cfg = read_yaml(path / "config.yaml")
        if dataset is None:
            dataset = RunFolder(path).dataset(cfg)
        elif Vocabulary.load(path / "entities.tsv") != dataset.entities:
            raise ValueError(f"{path}: the dataset's entities differ from the run's entities.tsv")
        tok = KGTokenizer.load(path / HF_DIR)
        rel = np.array(json.loads((path / RELATION_TEXTS).read_text()), dtype=object)
        texts = CheckpointTexts(StringTable.open(path / ENTITY_TEXTS_DIR), rel)
        trie = EntityTrie.open(path / TRIE_DIR)
        if trie.num_entities != dataset.num_entities or len(texts) != dataset.num_entities:
            raise ValueError(f"{path}: {trie.num_entities} entities in the trie, {len(texts)} strings, "
                             f"{dataset.num_entities} in the dataset")
        enc = TemplateEncoder(tok, texts, meta["tail_template"], meta.get("head_template"), cfg["kgt5"]["max_length"],
                              RaggedTokens.open(path / TRIE_DIR))
        run = cls(path, cfg, dataset, load_model(path / HF_DIR, device), tok, texts, enc, trie)
        run.meta, run.directions = meta, enc.directions
        return run

    def predict_new(self, text: str, relation: str, head: bool = False, facts=None,
                    description: Optional[str] = None, k: int = 10) -> list[dict]:
        """Top-``k`` entities for a query about an entity outside the graph: the template filled with
        ``text`` (``head=True``: the new entity is the tail). A checkpoint reads its template only,
        so ``facts`` and ``description`` are refused."""
        if facts or description is not None:
            raise ValueError(f"{self.path}: an imported checkpoint reads only its input template "
                             f"({self.meta['tail_template']!r}); put what you know about the entity in its text")
        if not str(text).strip():
            raise ValueError("the new entity's text is empty")
        r = self.resolve_relation(relation)
        strings = self.encoder.fill(np.array([str(text).strip()], dtype=object), np.array([r]), head)
        ids, mask = self.encoder.encode_strings(strings)
        sc = self.default_scorer
        if sc.method != "beam" or sc.beam_size < k:
            sc = self.scorer(method="beam", beam_size=max(int(k), sc.beam_size if sc.method == "beam" else 1))
        dev = next(self.model.parameters()).device
        ents, scores = sc.topk(None, None, head, inputs=(ids.to(dev), mask.to(dev)))
        keep = ents[0] >= 0
        e, v = ents[0][keep][:max(1, int(k))].numpy(), scores[0][keep][:max(1, int(k))].tolist()
        labels, names = self.dataset.entities.labels[e], self.dataset.entity_text(e)
        return [{"rank": i + 1, "id": int(x), "entity": str(lab), "name": str(nm), "score": float(s), "known": None}
                for i, (x, lab, nm, s) in enumerate(zip(e, labels, names, v))]

    def resolve_entity(self, text: str) -> int:
        """Label, else the checkpoint's entity string, else a unique name (close matches on a miss)."""
        i = self.dataset.entities.encode([text])[0]
        if i < 0:
            i = self.texts.lookup([text])[0]
        return int(i) if i >= 0 else super().resolve_entity(text)

    def resolve_relation(self, text: str) -> int:
        i = self.dataset.relations.encode([text])[0]
        if i < 0:
            hit = np.flatnonzero(self.texts.relation == str(text).strip())
            i = hit[0] if len(hit) else -1
        return int(i) if i >= 0 else super().resolve_relation(text)


# ------------------------------------------------------------------ export
def export_run(run, out: str | Path) -> Path:
    """Write a trained KGT5 run in the Hugging Face layout: ``config.json`` + ``model.safetensors``,
    the tokenizer (``tokenizer.json``, ``tokenizer_config.json``: ``AutoTokenizer`` opens it and
    appends ``</s>`` as the model was trained), ``entity_strings.tsv`` / ``relation_strings.tsv``
    (``label<TAB>string``) and ``kgt5.json`` (templates; what :func:`import_checkpoint` reads)."""
    from .tokenizer import HFTokenizer

    cfg = run.config_dict()
    k = cfg.get("kgt5") or {}
    if str((cfg.get("model") or {}).get("name", "")).lower() != "kgt5" or isinstance(run, PretrainedKGT5Run):
        raise ValueError(f"{run.path}: export takes a run trained with kgc train --model kgt5")
    if k.get("context") or k.get("descriptions"):
        raise ValueError(f"{run.path}: its inputs carry the neighbourhood or descriptions (kgt5.context / "
                         f"kgt5.descriptions), which a template of entity and relation strings cannot give")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder")
    stage = out.with_name(f".{out.name}.exporting-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    try:
        with quiet_transformers():
            run.model.save_pretrained(str(stage))
        tok = run.tokenizer
        if isinstance(tok, HFTokenizer):
            tok.hf.save_pretrained(str(stage))
        else:
            import copy

            from tokenizers import processors
            from transformers import PreTrainedTokenizerFast

            raw = copy.deepcopy(tok.tok)
            raw.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", EOS_ID)])
            PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>",
                                    unk_token="<unk>").save_pretrained(str(stage))
        ds = run.dataset
        for name, labels, texts in (("entity_strings.tsv", ds.entities.labels, run.texts.entity),
                                    ("relation_strings.tsv", ds.relations.labels, run.texts.relation)):
            pd.DataFrame({"l": labels, "t": texts}).to_csv(stage / name, sep="\t", header=False, index=False, quoting=3)
        tail_t, head_t = TEMPLATES["kgt5"]
        atomic_write_text(stage / EXPORT_FILE, json.dumps({
            "tail_template": tail_t, "head_template": head_t, "entities": "entity_strings.tsv",
            "relations": "relation_strings.tsv", "max_length": int(k.get("max_length") or 128),
            "exported_from": str(run.path), "dataset": (cfg.get("data") or {}).get("source")}, indent=1) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out


__all__ = ["CheckpointTexts", "PretrainedKGT5Run", "TEMPLATES", "TemplateEncoder", "export_run",
           "import_checkpoint", "parse_template"]
