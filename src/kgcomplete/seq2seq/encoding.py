"""Token-id tables for entities/relations and vectorised assembly of KGT5 inputs.

Entity and relation texts are tokenised once; a query's input ids are the concatenation
``prefix + entity + "|" + relation + </s>`` (plus a description and, for KGT5-context, the
neighbourhood's lines) assembled with array gathers from pieces tokenised once (:class:`PiecePool`;
no per-query tokenisation). With a Metaspace tokenizer (words tokenised independently) this equals
tokenising the input string (line by line with context: :meth:`QueryEncoder.encode_text`).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .model import CONTEXT_MASK
from .tokenizer import EOS_ID, PAD_ID, KGTokenizer
from .verbalize import (ANSWER_PREFIX, DESCRIPTION_SEPARATOR, HEAD_PREFIX, LINE_SEPARATOR, QUERY_PREFIX, REVERSE_OF,
                        SEPARATOR, TAIL_PREFIX, EntityTexts)


def concat_ragged(parts: Sequence[tuple[torch.Tensor, torch.Tensor]], eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate per-row ragged pieces.

    ``parts``: list of ``(ids (B, Li), lengths (B,))`` (ids right-padded). Returns
    ``input_ids (B, L)`` right-padded with ``PAD_ID`` (``</s>`` appended when ``eos``) and
    ``attention_mask (B, L)``.
    """
    B = parts[0][0].shape[0]
    lengths = torch.stack([ln for _, ln in parts]).sum(0) + int(eos)
    width = int(lengths.max()) if B else 1
    out = torch.full((B, max(width, 1)), PAD_ID, dtype=torch.long)
    offset = torch.zeros(B, dtype=torch.long)
    for ids, ln in parts:  # a handful of parts, each one vectorised scatter
        cols = torch.arange(ids.shape[1])
        mask = cols[None, :] < ln[:, None]
        rows = torch.arange(B)[:, None].expand_as(mask)
        out[rows[mask], (offset[:, None] + cols[None, :])[mask]] = ids[mask]
        offset = offset + ln
    if eos:
        out[torch.arange(B), offset] = EOS_ID
    mask = (torch.arange(out.shape[1])[None, :] < lengths[:, None]).long()
    return out, mask


class PiecePool:
    """Token pieces in one flat array: piece ``p`` is ``tokens[start[p]:start[p] + length[p]]``.

    :meth:`assemble` concatenates, per row, a list of pieces into right-padded input ids with one
    vectorised gather (no Python loop per row).
    """

    def __init__(self):
        self._parts: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []
        self.size = 0

    def add(self, ids, lengths) -> np.ndarray:
        """``(n, L)`` right-padded ids and ``(n,)`` lengths -> ``(n,)`` new piece ids."""
        ids, lengths = np.asarray(ids, dtype=np.int64), np.asarray(lengths, dtype=np.int64)
        if ids.ndim == 1:
            ids = ids[None, :]
        keep = np.arange(ids.shape[1])[None, :] < lengths[:, None]
        self._parts.append(ids[keep].astype(np.int32))
        self._lengths.append(lengths)
        first = self.size
        self.size += len(lengths)
        return np.arange(first, self.size)

    def freeze(self) -> "PiecePool":
        self.tokens = np.concatenate(self._parts) if self._parts else np.zeros(0, np.int32)
        self.length = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int64)
        self.start = np.concatenate([[0], np.cumsum(self.length)[:-1]]).astype(np.int64)
        del self._parts, self._lengths
        return self

    def assemble(self, seg_row: np.ndarray, seg_piece: np.ndarray, rows: int, max_length: int,
                 seg_mask: Optional[np.ndarray] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Segments ``(S,)`` (row, piece), ordered by row then position -> ``input_ids (rows, L)`` and
        ``attention_mask (rows, L)``: each row's pieces, cut at ``max_length - 1`` tokens, then ``</s>``.
        ``seg_mask (S,)``: the mask value of each segment's tokens (default 1)."""
        ln = self.length[seg_piece]
        row_len = np.minimum(np.bincount(seg_row, weights=ln, minlength=rows).astype(np.int64), max_length - 1)
        tok_seg = np.repeat(np.arange(len(seg_piece)), ln)
        seg_first = np.cumsum(ln) - ln
        pos = np.arange(len(tok_seg)) - seg_first[tok_seg]
        # column of each segment's first token inside its row
        row_first_seg = np.searchsorted(seg_row, np.arange(rows))
        row_start_tok = np.concatenate([seg_first, [len(tok_seg)]])[np.minimum(row_first_seg, len(seg_row))]
        col = seg_first[tok_seg] + pos - row_start_tok[seg_row[tok_seg]]
        r = seg_row[tok_seg]
        keep = col < row_len[r]
        width = int(row_len.max(initial=0)) + 1
        out = np.zeros((rows, width), dtype=np.int64)
        out[r[keep], col[keep]] = self.tokens[self.start[seg_piece[tok_seg[keep]]] + pos[keep]]
        out[np.arange(rows), row_len] = EOS_ID
        mask = (np.arange(width)[None, :] <= row_len[:, None]).astype(np.int64)
        if seg_mask is not None:
            mask[r[keep], col[keep]] = seg_mask[tok_seg[keep]]
        return torch.from_numpy(out), torch.from_numpy(mask)


#: ``kgt5.context_attention`` values
CONTEXT_ATTENTION = ("query", "all")


def run_descriptions(dataset, kgt5: dict) -> Optional[np.ndarray]:
    """``(E,)`` the description texts a run with ``kgt5.descriptions: true`` reads (the first
    ``description_max_words`` words, sanitised; ``""`` where an entity has none), None when off;
    a one-line error when the dataset has no descriptions."""
    if not kgt5.get("descriptions"):
        return None
    if getattr(dataset, "entity_descriptions", None) is None:
        raise ValueError(f"kgt5.descriptions=true: dataset {getattr(dataset, 'name', '') or '(given in code)'} "
                         f"has no entity descriptions (entity_descriptions.tsv); set kgt5.descriptions=false")
    from .verbalize import description_texts

    return description_texts(dataset.entity_descriptions, int(kgt5.get("description_max_words") or 0))


def segment_cumsum(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sums restarting at every segment (``counts (B,)`` consecutive lengths)."""
    c = np.cumsum(values)
    before = np.concatenate([[0], c])[np.cumsum(counts) - counts]
    return c - np.repeat(before, counts)


def duplicate_rows(ids: np.ndarray) -> np.ndarray:
    """``(n, L)`` integer rows -> the indices of the rows equal to another row (ascending): one
    ``np.unique`` over an opaque key per row, no Python object per row."""
    rows = np.ascontiguousarray(ids, dtype=np.int32)
    keys = rows.view(np.dtype((np.void, rows.shape[1] * rows.itemsize))).ravel()
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return np.flatnonzero(counts[inverse.ravel()] > 1)


class QueryEncoder:
    """Tokenised entity/relation texts and query assembly (plain KGT5, KGT5-context, descriptions).

    Attributes:
        entity_ids: ``(E, Le)`` entity token ids *with* ``</s>``, right-padded (the decoder targets).
        entity_len: ``(E,)`` lengths without ``</s>``.
        relation_ids / relation_len: ``(R, Lr)`` / ``(R,)`` without ``</s>``.
        neighbourhood: the training graph's :class:`~kgcomplete.seq2seq.context.Neighbourhood` when
            inputs carry context (``query: <anchor> | <relation>`` then ``<relation> | <neighbour>``
            lines), else None (``predict tail: <anchor> | <relation>``).
        query_attention: context tokens get ``attention_mask`` value
            :data:`~kgcomplete.seq2seq.model.CONTEXT_MASK` (2) instead of 1, for a model whose
            decoder attends to the query tokens only (``kgt5.context_attention: query``).

    Every input is assembled from token pieces tokenised once (:class:`PiecePool`): the prefixes,
    each entity, each description (``: <first words>``), each query relation (``| <relation>`` /
    ``| reverse of <relation>``) and each context line head (``\\n <relation> |``, both directions);
    a context line is a line head plus the neighbour's entity piece. Context lines are added in the
    sample's order while they fit ``max_length`` (``</s>`` included) and ``context_size``; the rest
    of an over-long input is cut. :meth:`encode_text` tokenises an :func:`~.verbalize.input_text`
    string to the same ids.
    """

    def __init__(self, tokenizer: KGTokenizer, texts: EntityTexts, max_length: int = 128, *,
                 neighbourhood=None, context_size: int = 100, descriptions=None, seed: int = 0,
                 query_attention: bool = False):
        self.tokenizer, self.texts, self.max_length = tokenizer, texts, int(max_length)
        self.entity_ids = tokenizer.encode(texts.entity.tolist(), eos=True, max_length=max_length)
        self.entity_len = (self.entity_ids != PAD_ID).sum(1) - 1
        self.relation_ids = tokenizer.encode(texts.relation.tolist(), eos=False, max_length=max_length)
        self.relation_len = (self.relation_ids != PAD_ID).sum(1)
        pre = [TAIL_PREFIX, HEAD_PREFIX, ANSWER_PREFIX, SEPARATOR, QUERY_PREFIX, REVERSE_OF, LINE_SEPARATOR,
               DESCRIPTION_SEPARATOR]
        self._fixed = {p: tokenizer.encode([p], eos=False)[0] for p in pre}
        self._fixed = {p: t[t != PAD_ID] for p, t in self._fixed.items()}
        self.neighbourhood, self.context_size, self.seed = neighbourhood, int(context_size), int(seed)
        self.query_attention = bool(query_attention) and neighbourhood is not None
        self.descriptions = None if descriptions is None else np.asarray(descriptions, dtype=object)
        self._eval_sample = None
        self._build_pool()

    def duplicate_targets(self) -> np.ndarray:
        """Entity ids whose token sequence equals another entity's (e.g. both only ``<unk>``)."""
        return duplicate_rows(self.entity_ids.numpy())

    def _const(self, key: str, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = self._fixed[key]
        return t[None, :].expand(B, -1), torch.full((B,), len(t), dtype=torch.long)

    @classmethod
    def from_config(cls, tokenizer: KGTokenizer, texts: EntityTexts, kgt5: dict, dataset, seed: int = 0) -> "QueryEncoder":
        """The encoder a run's ``kgt5`` section asks for: ``context`` (the neighbourhood of
        ``dataset.train``, ``context_size``), ``descriptions`` (``description_max_words`` words of
        ``dataset.entity_descriptions``), ``max_length``, ``context_attention``. Keys missing in
        older runs mean off (and ``all``: runs from before the key)."""
        neighbourhood = descriptions = None
        attention = kgt5.get("context_attention") or "all"
        if attention not in CONTEXT_ATTENTION:
            raise ValueError(f"kgt5.context_attention={attention!r}: expected {' | '.join(CONTEXT_ATTENTION)}")
        if kgt5.get("context"):
            from .context import Neighbourhood

            neighbourhood = Neighbourhood(dataset.train, dataset.num_entities, dataset.num_relations)
        if kgt5.get("descriptions"):
            descriptions = run_descriptions(dataset, kgt5)
        return cls(tokenizer, texts, kgt5["max_length"], neighbourhood=neighbourhood,
                   context_size=int(kgt5.get("context_size") or 0), descriptions=descriptions, seed=seed,
                   query_attention=attention == "query")

    # ------------------------------------------------------------------ pieces
    def _build_pool(self) -> None:
        E, R = len(self.entity_len), len(self.relation_len)
        pool = PiecePool()
        f = {k: v.numpy() for k, v in self._fixed.items()}
        self._piece = {k: int(pool.add(v, [len(v)])[0]) for k, v in f.items()}
        self.ent0 = int(pool.add(self.entity_ids.numpy(), self.entity_len.numpy())[0]) if E else pool.size
        if self.descriptions is not None:
            d = self.tokenizer.encode(self.descriptions.tolist(), eos=False)
            dl = (d != PAD_ID).sum(1).numpy()
            sep = f[DESCRIPTION_SEPARATOR]
            d = np.concatenate([np.broadcast_to(sep, (E, len(sep))), d.numpy()], 1)
            d, dl = self._shift(d, np.where(dl > 0, len(sep), 0), len(sep)), np.where(dl > 0, dl + len(sep), 0)
            self.desc0 = int(pool.add(d, dl)[0]) if E else pool.size
        else:
            self.desc0 = None
        rel, rl = self.relation_ids.numpy(), self.relation_len.numpy()
        bar, rev, nl = f[SEPARATOR], f[REVERSE_OF], f[LINE_SEPARATOR]
        # query relations ``| r`` (codes 0..R-1), ``| reverse of r`` (R..2R-1)
        self.rel0 = pool.add(*self._concat([bar, rel], [len(bar), rl]))[0] if R else pool.size
        pool.add(*self._concat([bar, rev, rel], [len(bar), len(rev), rl]))
        # context line heads ``\n r |`` / ``\n reverse of r |``
        self.line0 = pool.add(*self._concat([nl, rel, bar], [len(nl), rl, len(bar)]))[0] if R else pool.size
        pool.add(*self._concat([nl, rev, rel, bar], [len(nl), len(rev), rl, len(bar)]))
        self.pool = pool.freeze()
        nbh = self.neighbourhood
        if nbh is not None:  # token length of every edge's line, computed once
            self.edge_line_len = self.pool.length[self.line0 + nbh.rel] + self.entity_len.numpy()[nbh.nb]

    @staticmethod
    def _shift(ids: np.ndarray, drop: np.ndarray, lead: int) -> np.ndarray:
        """Rows of ``ids`` whose ``drop`` is 0 lose their ``lead`` leading columns (an empty
        description gets no separator)."""
        out = ids.copy()
        z = drop == 0
        out[z, :ids.shape[1] - lead] = ids[z, lead:]
        out[z, ids.shape[1] - lead:] = PAD_ID
        return out

    def _concat(self, parts: list, lengths: list) -> tuple[np.ndarray, np.ndarray]:
        """Row-wise concatenation of ``R`` rows of token parts (1-D constants broadcast)."""
        R = len(self.relation_len)
        rows = [np.broadcast_to(p, (R, len(p))) if np.ndim(p) == 1 else p for p in parts]
        lens = [np.full(R, ln) if np.ndim(ln) == 0 else np.asarray(ln) for ln in lengths]
        segs = [(torch.from_numpy(np.array(r, dtype=np.int64)), torch.from_numpy(np.array(ln, dtype=np.int64))) for r, ln in zip(rows, lens)]
        ids, mask = concat_ragged(segs, eos=False)
        return ids.numpy(), mask.sum(1).numpy()

    # ------------------------------------------------------------------ context
    @property
    def context(self) -> bool:
        return self.neighbourhood is not None

    def sample(self, stream: int):
        """The neighbourhood sample of training epoch ``stream`` (``EVAL_STREAM``: evaluation's)."""
        return self.neighbourhood.sample(self.context_size, self.seed, stream)

    @property
    def eval_sample(self):
        """The fixed sample every evaluation/prediction reads (built once)."""
        if self._eval_sample is None and self.context:
            from .context import EVAL_STREAM

            self._eval_sample = self.sample(EVAL_STREAM)
        return self._eval_sample

    def _plan(self, anchor: np.ndarray, relation: np.ndarray, head: np.ndarray, exclude: Optional[np.ndarray],
              sample) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """Segments ``(row, piece)`` of a batch's inputs, ordered by row (see the class docstring), and
        their mask values (None: all 1)."""
        B = len(anchor)
        if self.context:
            first = np.full(B, self._piece[QUERY_PREFIX])
            rel = self.rel0 + relation + head * len(self.relation_len)
        else:
            first = np.where(head, self._piece[HEAD_PREFIX], self._piece[TAIL_PREFIX])
            rel = self.rel0 + relation
        q = [first, self.ent0 + anchor]
        if self.desc0 is not None:
            q.append(self.desc0 + anchor)
        q.append(rel)
        q = np.stack(q, 1)  # (B, nq)
        nq = q.shape[1]
        if not self.context:
            return np.repeat(np.arange(B), nq), q.reshape(-1), None
        qlen = self.pool.length[q].sum(1)
        budget = self.max_length - 1 - qlen
        sample = self.eval_sample if sample is None else sample
        start = sample.ptr[anchor]
        cnt = sample.ptr[anchor + 1] - start
        row = np.repeat(np.arange(B), cnt)
        local = np.arange(len(row)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        edge = sample.edge[start[row] + local]
        keep = np.ones(len(edge), bool) if exclude is None else self.neighbourhood.triple[edge] != exclude[row]
        keep &= segment_cumsum(keep.astype(np.int64), cnt) <= self.context_size
        keep &= segment_cumsum(np.where(keep, self.edge_line_len[edge], 0), cnt) <= budget[row]
        edge, row = edge[keep], row[keep]
        lines = np.bincount(row, minlength=B)
        per_row = nq + 2 * lines
        seg_first = np.cumsum(per_row) - per_row
        S = int(per_row.sum())
        seg_row = np.repeat(np.arange(B), per_row)
        seg_piece = np.empty(S, dtype=np.int64)
        seg_piece[(seg_first[:, None] + np.arange(nq)[None, :]).reshape(-1)] = q.reshape(-1)
        j = np.arange(len(edge)) - np.repeat(np.cumsum(lines) - lines, lines)  # line index inside its row
        at = seg_first[row] + nq + 2 * j
        seg_piece[at] = self.line0 + self.neighbourhood.rel[edge]
        seg_piece[at + 1] = self.ent0 + self.neighbourhood.nb[edge]
        seg_mask = None
        if self.query_attention:
            seg_mask = np.ones(S, dtype=np.int64)
            seg_mask[at], seg_mask[at + 1] = CONTEXT_MASK, CONTEXT_MASK
        return seg_row, seg_piece, seg_mask

    @staticmethod
    def _as_arrays(anchor, relation, head, exclude):
        a = torch.as_tensor(anchor).cpu().numpy().astype(np.int64).ravel()
        r = torch.as_tensor(relation).cpu().numpy().astype(np.int64).ravel()
        h = np.broadcast_to(np.asarray(head, dtype=np.int64), a.shape)
        x = None if exclude is None else np.broadcast_to(np.asarray(exclude, dtype=np.int64), a.shape)
        return a, r, h, x

    def queries(self, anchor, relation, head, exclude=None, sample=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B,)`` anchor/relation ids -> ``input_ids (B, L)``, ``attention_mask (B, L)``.

        ``head``: a bool or ``(B,)`` bools (the query asks for the head; the anchor is the tail).
        With context: ``exclude (B,)`` is the row of the training triple each example predicts
        (-1: none), whose edge is left out of the anchor's context; ``sample`` a
        :class:`~kgcomplete.seq2seq.context.ContextSample` (default: the evaluation sample)."""
        a, r, h, x = self._as_arrays(anchor, relation, head, exclude)
        seg_row, seg_piece, seg_mask = self._plan(a, r, h, x, sample)
        return self.pool.assemble(seg_row, seg_piece, len(a), self.max_length, seg_mask)

    def input_lengths(self, anchor, relation, head, exclude=None, sample=None, chunk: int = 1 << 16) -> np.ndarray:
        """``(B,)`` token lengths (``</s>`` included) of :meth:`queries`' rows, without assembling them."""
        a, r, h, x = self._as_arrays(anchor, relation, head, exclude)
        out = np.empty(len(a), dtype=np.int64)
        for s in range(0, len(a), chunk):
            sl = slice(s, s + chunk)
            seg_row, seg_piece, _ = self._plan(a[sl], r[sl], h[sl], None if x is None else x[sl], sample)
            n = len(a[sl])
            out[sl] = np.minimum(np.bincount(seg_row, weights=self.pool.length[seg_piece], minlength=n),
                                 self.max_length - 1) + 1
        return out

    def context_facts(self, anchor: int, exclude: int = -1, sample=None) -> np.ndarray:
        """``(F, 3)`` facts ``[relation, neighbour, inverse]`` in the context of one query, in order
        (inspection and tests; :meth:`queries` does this for batches)."""
        if not self.context:
            return np.zeros((0, 3), dtype=np.int64)
        seg_row, seg_piece, _ = self._plan(np.array([anchor]), np.array([0]), np.array([0]), np.array([exclude]), sample)
        nq = 4 if self.desc0 is not None else 3
        code = seg_piece[nq::2] - self.line0
        R = len(self.relation_len)
        return np.stack([code % R, seg_piece[nq + 1::2] - self.ent0, code // R], 1)

    def encode_text(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Input strings (:func:`~kgcomplete.seq2seq.verbalize.input_text`) -> ``input_ids (B, L)``,
        ``attention_mask (B, L)``, as :meth:`queries` assembles them: lines are tokenised
        separately, joined by the line separator's tokens, and kept while they fit ``max_length``
        (the first line is cut instead). For inputs that are not in the graph (new entities)."""
        lines = [str(t).split(LINE_SEPARATOR) for t in texts]
        counts = np.array([len(x) for x in lines], dtype=np.int64)
        flat = [x for ls in lines for x in ls]
        ids = self.tokenizer.encode(flat, eos=False)
        ln = (ids != PAD_ID).sum(1).numpy()
        pool = PiecePool()
        pool.add(ids.numpy(), ln)
        nl = self._fixed[LINE_SEPARATOR].numpy()
        sep = int(pool.add(nl, [len(nl)])[0])
        pool.freeze()
        first = np.cumsum(counts) - counts
        is_first = np.zeros(len(flat), bool)
        is_first[first] = True
        row = np.repeat(np.arange(len(texts)), counts)
        line_len = np.where(is_first, 0, ln + len(nl))
        budget = self.max_length - 1 - ln[first]
        keep = is_first | (segment_cumsum(line_len, counts) <= budget[row])
        idx = np.flatnonzero(keep)
        # each kept line but the first is preceded by the separator piece
        pieces = np.stack([np.where(is_first[idx], -1, sep), idx], 1).reshape(-1)
        rows = np.repeat(row[idx], 2)
        ok = pieces >= 0
        seg_mask = None
        if self.query_attention:  # every line after the query line is context
            seg_mask = np.repeat(np.where(is_first[idx], 1, CONTEXT_MASK), 2)[ok]
        return pool.assemble(rows[ok], pieces[ok], len(texts), self.max_length, seg_mask)

    def questions(self, topic, questions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """QA inputs ``predict answer: <topic> | <question>``; questions tokenised here."""
        from .verbalize import sanitize

        t = torch.as_tensor(topic, dtype=torch.long).cpu()
        B = len(t)
        q = self.tokenizer.encode(sanitize(questions).tolist(), eos=False, max_length=self.max_length)
        parts = [
            self._const(ANSWER_PREFIX, B),
            (self.entity_ids[t], self.entity_len[t]),
            self._const(SEPARATOR, B),
            (q, (q != PAD_ID).sum(1)),
        ]
        return concat_ragged(parts)

    def targets(self, entities) -> torch.Tensor:
        """``(B,)`` entity ids -> ``(B, Lt)`` labels (``</s>``-terminated, pad = -100), trimmed."""
        e = torch.as_tensor(entities, dtype=torch.long).cpu()
        lab = self.entity_ids[e]
        width = int(self.entity_len[e].max()) + 1 if len(e) else 1
        lab = lab[:, :width].clone()
        lab[lab == PAD_ID] = -100
        return lab
