"""Prefix trie of entity token sequences in flat arrays: built per depth with NumPy, opened memory-mapped.

Layout (breadth-first node ids; node 0 is the root, the empty prefix)::

    token  (N,)     int16 | int32   the token on the edge into the node (-1 for the root)
    indptr (N + 1,) int32 | int64   children of node n are nodes indptr[n] .. indptr[n + 1] - 1,
                                    sorted by token (one contiguous run per node)
    entity (N,)     int32           entity id of a leaf (the node reached by ``</s>``), -1 elsewhere

Nodes are numbered depth by depth and, within a depth, by (parent, token): the order of the
distinct ``parent * V + token`` keys of that depth (one ``np.unique`` per depth, no Python object
per entity). So the children of a node are contiguous and sorted, a step is a bounded binary search
on ``token`` inside ``[indptr[n], indptr[n + 1])``, and the trie takes about 10 bytes per node
(``V <= 32768``, fewer than 2**31 nodes) where a key/child table took 32.

:meth:`EntityTrie.save` writes the three arrays as ``.npy`` files (plus ``trie.json``);
:meth:`EntityTrie.open` maps them (``mmap_mode="c"``: pages are read on first use and shared
with the page cache, so a trie of 91M entities opens in milliseconds and costs only the pages that
decoding touches). :class:`RaggedTokens` holds the entity token sequences themselves the same way
(one flat array + offsets), for teacher forcing and for rebuilding the trie.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .tokenizer import EOS_ID, PAD_ID

TRIE_FILE = "trie.json"
_ARRAYS = ("token", "indptr", "entity")


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest signed integer type that holds every token id (and -1)."""
    return np.dtype(np.int16) if vocab_size <= 1 << 15 else np.dtype(np.int32)


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    with warnings.catch_warnings():  # a read-only map: torch warns that it may not be written (it is not)
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a)


class RaggedTokens:
    """Token sequences of different lengths as one flat array and ``(n + 1,)`` int64 offsets.

    ``rows(ids)`` gives a right-padded ``(len(ids), L)`` int64 tensor (``PAD_ID`` padding), so it
    stands in for a padded ``(n, L)`` table (``tokens[ids]`` works too). Files: ``tokens.npy``,
    ``offsets.npy`` (:meth:`save` / :meth:`open`, memory-mapped).
    """

    def __init__(self, flat: np.ndarray, offsets: np.ndarray):
        self.flat, self.offsets = flat, offsets
        if len(offsets) == 0 or int(offsets[0]) != 0 or int(offsets[-1]) != len(flat):
            raise ValueError(f"offsets must run from 0 to {len(flat)} (the flat array's length)")

    @classmethod
    def from_padded(cls, sequences) -> "RaggedTokens":
        seq = torch.as_tensor(sequences).cpu().numpy()
        lengths = (seq != PAD_ID).sum(1)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        return cls(seq[seq != PAD_ID], offsets)  # row-major: the tokens of row 0, then row 1, ...

    @classmethod
    def from_lists(cls, flat: np.ndarray, lengths: np.ndarray) -> "RaggedTokens":
        return cls(np.asarray(flat), np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), int(self.lengths.max(initial=0)))

    def rows(self, ids) -> torch.Tensor:
        """``(B,)`` ids (array or tensor, any device) -> ``(B, L)`` int64, right-padded with ``PAD_ID``."""
        ids = np.asarray(torch.as_tensor(ids).cpu(), dtype=np.int64).ravel()
        start, stop = self.offsets[ids], self.offsets[ids + 1]
        lens = stop - start
        out = np.full((len(ids), max(int(lens.max(initial=0)), 1)), PAD_ID, dtype=np.int64)
        rows = np.repeat(np.arange(len(ids)), lens)
        cols = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        out[rows, cols] = self.flat[np.repeat(start, lens) + cols]
        return torch.from_numpy(out)

    __getitem__ = rows

    def to(self, device) -> "RaggedTokens":  # rows() moves only what it gathers
        return self

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "tokens.npy", self.flat)
        np.save(folder / "offsets.npy", self.offsets)

    @classmethod
    def open(cls, folder: str | Path, mmap: bool = True) -> "RaggedTokens":
        mode = "r" if mmap else None
        return cls(np.load(Path(folder) / "tokens.npy", mmap_mode=mode),
                   np.load(Path(folder) / "offsets.npy", mmap_mode=mode))


class EntityTrie:
    """Trie of ``</s>``-terminated entity token sequences (see the module docstring for the layout).

    ``EntityTrie(sequences (E, L), V)`` from a ``PAD_ID``-padded table, :meth:`from_ragged` from a
    :class:`RaggedTokens`, :meth:`open` from a folder :meth:`save` wrote. ``duplicates``: what to do
    when two entities have the same token sequence: ``"error"``, or ``"first"`` (the smallest id
    gets the leaf; the others can never be generated, :attr:`shadowed` counts them).

    Attributes: ``token``, ``indptr``, ``entity`` (torch tensors, possibly over memory maps),
    ``vocab_size``, ``num_nodes``, ``num_entities``, ``depth`` (longest sequence incl. ``</s>``),
    ``shadowed``.
    """

    def __init__(self, sequences=None, vocab_size: Optional[int] = None, duplicates: str = "error"):
        if sequences is None:  # filled by from_arrays / open
            return
        built = self.from_ragged(RaggedTokens.from_padded(sequences), int(vocab_size), duplicates)
        self.__dict__.update(built.__dict__)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_ragged(cls, seqs: RaggedTokens, vocab_size: int, duplicates: str = "error",
                    block: int = 1 << 24) -> "EntityTrie":
        """Build from ragged sequences: one ``np.unique`` over ``node * V + token`` per depth.

        Working memory: about 40 bytes per entity still alive at a depth plus the output arrays;
        no Python object per entity. ``block``: sequences whose tokens are gathered at once.
        """
        if duplicates not in ("error", "first"):
            raise ValueError(f"duplicates={duplicates!r}: error | first")
        V, E = int(vocab_size), len(seqs)
        offsets = np.asarray(seqs.offsets)
        lengths = np.diff(offsets)
        if E and lengths.min() < 1:
            raise ValueError(f"entity {int(np.argmin(lengths))} has an empty token sequence (no </s>)")
        for s in range(0, E, block):  # exactly one </s> per sequence, at its end
            e = min(s + block, E)
            lo, hi = int(offsets[s]), int(offsets[e])
            seg = np.asarray(seqs.flat[lo:hi])
            bad = (np.add.reduceat((seg == EOS_ID).astype(np.int32), offsets[s:e] - lo) != 1) | (seg[offsets[s + 1:e + 1] - 1 - lo] != EOS_ID)
            if bad.any():
                raise ValueError(f"entity {s + int(np.flatnonzero(bad)[0])}: its token sequence must hold </s> once, "
                                 f"at its end (a string that tokenises to </s>?)")
        tdt = token_dtype(V)
        node = np.zeros(E, dtype=np.int64)
        alive = np.arange(E, dtype=np.int64)
        tokens, counts, leaves = [np.full(1, -1, tdt)], [], []
        n_nodes, level_start, level_size, shadowed = 1, 0, 1, 0
        depth = 0
        while len(alive):
            tok = np.asarray(seqs.flat[offsets[alive] + depth], dtype=np.int64)
            uniq, inv = np.unique(node[alive] * V + tok, return_inverse=True)
            parents = uniq // V
            counts.append(np.bincount(parents - level_start, minlength=level_size).astype(np.int64))
            tokens.append((uniq % V).astype(tdt))
            node[alive] = n_nodes + inv
            level_start, level_size = n_nodes, len(uniq)
            n_nodes += len(uniq)
            ended = lengths[alive] == depth + 1
            leaf_nodes, leaf_ents = node[alive[ended]], alive[ended]
            if len(np.unique(leaf_nodes)) != len(leaf_nodes):
                if duplicates == "error":
                    srt = np.sort(leaf_nodes)
                    n = srt[np.flatnonzero(srt[1:] == srt[:-1])[0]]
                    raise ValueError(f"two entities have the same token sequence: {leaf_ents[leaf_nodes == n][:2].tolist()}")
                order = np.lexsort((leaf_ents, leaf_nodes))  # per leaf, the smallest entity id first
                keep = np.concatenate([[True], leaf_nodes[order][1:] != leaf_nodes[order][:-1]])
                shadowed += int((~keep).sum())
                leaf_nodes, leaf_ents = leaf_nodes[order][keep], leaf_ents[order][keep]
            leaves.append((leaf_nodes, leaf_ents))
            alive = alive[~ended]
            depth += 1
        counts.append(np.zeros(level_size, dtype=np.int64))  # the deepest level has no children
        ip_dt = np.int32 if n_nodes < (1 << 31) - 1 else np.int64
        indptr = np.empty(n_nodes + 1, dtype=ip_dt)
        indptr[0] = 1
        pos = 1
        total = 1
        for c in counts:
            csum = np.cumsum(c) + total
            indptr[pos:pos + len(c)] = csum
            pos += len(c)
            total = int(csum[-1]) if len(c) else total
        entity = np.full(n_nodes, -1, dtype=np.int32 if E < (1 << 31) - 1 else np.int64)
        for leaf_nodes, leaf_ents in leaves:
            entity[leaf_nodes] = leaf_ents
        trie = cls.from_arrays(np.concatenate(tokens), indptr, entity, V, depth, E)
        trie.shadowed = shadowed
        return trie

    @classmethod
    def from_arrays(cls, token: np.ndarray, indptr: np.ndarray, entity: np.ndarray, vocab_size: int, depth: int,
                    num_entities: int, shadowed: int = 0) -> "EntityTrie":
        trie = cls()
        trie.token, trie.indptr, trie.entity = _as_tensor(token), _as_tensor(indptr), _as_tensor(entity)
        trie.vocab_size, trie.depth, trie.num_entities = int(vocab_size), int(depth), int(num_entities)
        trie.num_nodes, trie.shadowed = len(token), int(shadowed)
        fanout = np.diff(np.asarray(indptr)) if len(indptr) < (1 << 26) else None
        trie._search_steps = int(np.ceil(np.log2(int(fanout.max(initial=0)) + 1))) if fanout is not None \
            else int(np.ceil(np.log2(vocab_size + 1)))
        return trie

    # ------------------------------------------------------------------ files
    def save(self, folder: str | Path) -> None:
        """``token.npy``, ``indptr.npy``, ``entity.npy`` and ``trie.json`` (sizes, vocabulary, depth)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in _ARRAYS:
            np.save(folder / f"{name}.npy", getattr(self, name).cpu().numpy())
        meta = {"vocab_size": self.vocab_size, "depth": self.depth, "num_entities": self.num_entities,
                "num_nodes": self.num_nodes, "shadowed": self.shadowed, "search_steps": self._search_steps}
        (folder / TRIE_FILE).write_text(json.dumps(meta, indent=1) + "\n")

    @classmethod
    def open(cls, folder: str | Path, mmap: bool = True) -> "EntityTrie":
        """A trie :meth:`save` wrote; ``mmap``: map the arrays instead of reading them."""
        folder = Path(folder)
        try:
            meta = json.loads((folder / TRIE_FILE).read_text())
            arrays = [np.load(folder / f"{n}.npy", mmap_mode="c" if mmap else None) for n in _ARRAYS]
        except (OSError, ValueError) as e:
            raise ValueError(f"{folder}: not a readable entity trie ({e})") from None
        token, indptr, entity = arrays
        if len(indptr) != len(token) + 1 or len(entity) != len(token) or len(token) != meta["num_nodes"]:
            raise ValueError(f"{folder}: trie arrays of inconsistent sizes (token {len(token)}, indptr "
                             f"{len(indptr)}, entity {len(entity)}, trie.json num_nodes {meta['num_nodes']})")
        trie = cls()
        trie.token, trie.indptr, trie.entity = _as_tensor(token), _as_tensor(indptr), _as_tensor(entity)
        trie.vocab_size, trie.depth, trie.num_entities = meta["vocab_size"], meta["depth"], meta["num_entities"]
        trie.num_nodes, trie.shadowed, trie._search_steps = meta["num_nodes"], meta["shadowed"], meta["search_steps"]
        return trie

    def nbytes(self) -> int:
        """Bytes of the three arrays (what :meth:`save` writes, less the headers)."""
        return sum(getattr(self, n).numel() * getattr(self, n).element_size() for n in _ARRAYS)

    def to(self, device) -> "EntityTrie":
        for name in _ARRAYS:
            setattr(self, name, getattr(self, name).to(device))
        return self

    # ------------------------------------------------------------------ queries
    def _children(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = nodes.clamp_min(0)
        return self.indptr[n].long(), self.indptr[n + 1].long()

    def step(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``(N,)`` nodes and tokens -> ``(N,)`` child nodes (``-1`` if no such child or node < 0)."""
        lo, hi = self._children(nodes)
        end = hi
        tokens = tokens.to(lo.device).long()
        last = max(self.num_nodes - 1, 0)
        for _ in range(self._search_steps):  # lower bound of the token among the sorted children
            active = lo < hi
            mid = torch.div(lo + hi, 2, rounding_mode="floor")
            right = active & (self.token[mid.clamp_max(last)].long() < tokens)
            lo = torch.where(right, mid + 1, lo)
            hi = torch.where(active & ~right, mid, hi)
        ok = (nodes >= 0) & (lo < end) & (self.token[lo.clamp_max(last)].long() == tokens)
        return torch.where(ok, lo, torch.full_like(lo, -1))

    def allowed(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Allowed next tokens of ``(N,)`` nodes, flat: ``(row index, token)`` pairs (none for -1)."""
        start, stop = self._children(nodes)
        count = torch.where(nodes >= 0, stop - start, torch.zeros_like(start))
        rows = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), count)
        first = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        flat = torch.repeat_interleave(start, count) + (torch.arange(len(rows), device=nodes.device) - first)
        return rows, self.token[flat].long()

    def mask(self, nodes: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """``(N, V)`` additive mask: 0 for allowed tokens, ``-inf`` elsewhere."""
        m = torch.full((len(nodes), self.vocab_size), float("-inf"), dtype=dtype, device=nodes.device)
        rows, toks = self.allowed(nodes)
        m[rows, toks] = 0.0
        return m

    def lookup(self, sequences: torch.Tensor) -> torch.Tensor:
        """``(N, L)`` generated ids (``</s>``-terminated, anything after ignored) -> ``(N,)`` entity ids, -1
        if the sequence is not an entity text."""
        node = torch.zeros(sequences.shape[0], dtype=torch.long, device=sequences.device)
        done = torch.zeros_like(node, dtype=torch.bool)
        for d in range(sequences.shape[1]):  # per position, vectorised over sequences
            tok = sequences[:, d]
            nxt = self.step(node, tok)
            node = torch.where(done, node, nxt)
            done = done | (tok == EOS_ID) | (node < 0)
        ent = self.entity[node.clamp_min(0)].long()
        return torch.where(node >= 0, ent, torch.full_like(ent, -1))

    def prefix_allowed_tokens_fn(self):
        """A ``prefix_allowed_tokens_fn`` for ``transformers`` ``generate`` (slow: per beam per step)."""
        def fn(batch_id: int, input_ids: torch.Tensor) -> list[int]:
            node = torch.zeros(1, dtype=torch.long, device=self.token.device)
            for tok in input_ids[1:].tolist():  # skip the decoder start token
                node = self.step(node, torch.tensor([tok], device=node.device))
            if node.item() < 0 or self.entity[node.item()] >= 0:
                return [PAD_ID]
            return self.allowed(node)[1].tolist()

        return fn


__all__ = ["EntityTrie", "RaggedTokens", "token_dtype"]
