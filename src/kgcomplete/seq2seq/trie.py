"""Prefix trie of entity token sequences, stored as flat sorted arrays for vectorised lookups.

Node 0 is the root (empty prefix). A transition ``(parent, token) -> child`` is stored under the
key ``parent * V + token`` in a sorted ``keys`` array, so children of a node form one contiguous
run (CSR) and a batch of steps is one ``searchsorted``. Each sequence ends with ``</s>``; the node
reached by ``</s>`` is a leaf whose ``entity`` is the entity id (``-1`` for inner nodes).
"""

from __future__ import annotations

import numpy as np
import torch

from .tokenizer import EOS_ID, PAD_ID


class EntityTrie:
    """Built once from ``sequences (E, L)`` (``</s>``-terminated, ``PAD_ID``-padded).

    Attributes (torch int64 tensors): ``keys (T,)`` sorted transition keys, ``child (T,)``,
    ``indptr (N + 1,)`` children of node n are ``keys[indptr[n]:indptr[n + 1]] % V``,
    ``entity (N,)`` leaf -> entity id, ``depth`` = longest sequence incl. ``</s>``.
    """

    def __init__(self, sequences: torch.Tensor, vocab_size: int):
        seq = torch.as_tensor(sequences, dtype=torch.long).cpu().numpy()
        E, L = seq.shape
        V = int(vocab_size)
        lengths = (seq != PAD_ID).sum(1)  # includes </s>
        if E and not (seq[np.arange(E), lengths - 1] == EOS_ID).all():
            raise ValueError("every entity sequence must end with </s>")
        node = np.zeros(E, dtype=np.int64)  # current node per sequence
        n_nodes = 1
        keys_all, child_all = [], []
        entity = np.full(1 + int(lengths.sum()), -1, dtype=np.int64)
        for d in range(L):  # one vectorised pass per depth
            alive = lengths > d
            if not alive.any():
                break
            k = node[alive] * V + seq[alive, d]
            uniq, inv = np.unique(k, return_inverse=True)
            new_ids = n_nodes + np.arange(len(uniq))
            node[alive] = new_ids[inv]
            keys_all.append(uniq)
            child_all.append(new_ids)
            n_nodes += len(uniq)
            ended = alive & (lengths == d + 1)
            leaf = node[ended]
            if len(np.unique(leaf)) != len(leaf):
                raise ValueError("two entities have the same token sequence")
            entity[leaf] = np.flatnonzero(ended)
        keys = np.concatenate(keys_all) if keys_all else np.zeros(0, np.int64)
        child = np.concatenate(child_all) if child_all else np.zeros(0, np.int64)
        order = np.argsort(keys, kind="stable")  # parents are created in depth order; sort by key
        keys, child = keys[order], child[order]
        parents = keys // V
        self.indptr = torch.from_numpy(np.searchsorted(parents, np.arange(n_nodes + 1)).astype(np.int64))
        self.keys = torch.from_numpy(keys)
        self.child = torch.from_numpy(child)
        self.entity = torch.from_numpy(entity[:n_nodes])
        self.vocab_size = V
        self.num_nodes = n_nodes
        self.num_entities = E
        self.depth = int(lengths.max(initial=0))

    def to(self, device) -> "EntityTrie":
        for name in ("indptr", "keys", "child", "entity"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def step(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """``(N,)`` nodes and tokens -> ``(N,)`` child nodes (``-1`` if no such child or node < 0)."""
        k = nodes.clamp_min(0) * self.vocab_size + tokens
        pos = torch.searchsorted(self.keys, k).clamp_max(max(len(self.keys) - 1, 0))
        ok = (nodes >= 0) & (self.keys[pos] == k) if len(self.keys) else torch.zeros_like(nodes, dtype=torch.bool)
        return torch.where(ok, self.child[pos], torch.full_like(nodes, -1))

    def allowed(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Allowed next tokens of ``(N,)`` nodes, flat: ``(row index, token)`` pairs (none for -1)."""
        n = nodes.clamp_min(0)
        start, stop = self.indptr[n], self.indptr[n + 1]
        count = torch.where(nodes >= 0, stop - start, torch.zeros_like(start))
        rows = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), count)
        first = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        flat = torch.repeat_interleave(start, count) + (torch.arange(len(rows), device=nodes.device) - first)
        return rows, self.keys[flat] % self.vocab_size

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
        ent = self.entity[node.clamp_min(0)]
        return torch.where(node >= 0, ent, torch.full_like(ent, -1))

    def prefix_allowed_tokens_fn(self):
        """A ``prefix_allowed_tokens_fn`` for ``transformers`` ``generate`` (slow: per beam per step)."""
        def fn(batch_id: int, input_ids: torch.Tensor) -> list[int]:
            node = torch.zeros(1, dtype=torch.long, device=self.keys.device)
            for tok in input_ids[1:].tolist():  # skip the decoder start token
                node = self.step(node, torch.tensor([tok], device=node.device))
            if node.item() < 0 or self.entity[node.item()] >= 0:
                return [PAD_ID]
            return self.allowed(node)[1].tolist()

        return fn
