"""KGT5 decoding (greedy, sampling, beam, trie-constrained beam) and the ranking scorer.

All decoders run the encoder once per query and the decoder one token per step for every
hypothesis of every query at once (KV cache, ``EncoderDecoderCache.reorder_cache`` for beams).
A hypothesis' score is its **sequence log-probability** ``sum_t log p(y_t | y_<t, x)`` under the
*unconstrained* model (including ``</s>``); the trie only restricts which tokens may be chosen, so
constrained scores equal teacher-forced scores (:func:`score_entities`).

Ranking rule (:class:`KGT5Scorer`): an entity that the decoder generated scores its sequence
log-probability (sampling: the best over duplicate samples); an entity that was never generated
scores ``-inf``. The shared evaluator ranks ties realistically, so the true answer, if never
generated, gets the mean rank of all never-generated (unfiltered) entities:
``1 + #generated + #not-generated-others / 2``. Given explicit candidates (OGB protocol), each
candidate is scored exactly by teacher forcing instead.

:func:`evaluate_generated` and :func:`generated_top_k` apply the same rule to the decoder's
``(B, K)`` output directly (no ``(B, E)`` score matrix): the ranks, metrics and top-k rows equal
the shared evaluator's and :func:`~kgcomplete.runs.protocol.top_k_predictions`' on the dense
scores, and memory does not grow with the number of entities (WikiKG90Mv2: 91M).
"""

from __future__ import annotations

import functools
import inspect
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..evaluation.evaluator import RankingResult, metrics_from_ranks, realistic_rank
from .tokenizer import EOS_ID, PAD_ID
from .trie import EntityTrie

METHODS = ("beam", "sample", "greedy", "exhaustive")


@functools.cache
def _kv_cache_argument() -> str:
    """The name of T5's KV-cache argument and output: ``cache`` in transformers >= 5.2x,
    ``past_key_values`` (deprecated there) before; asked once of T5's own forward (the query-attention
    subclass passes its keywords through)."""
    from transformers import T5ForConditionalGeneration

    return "cache" if "cache" in inspect.signature(T5ForConditionalGeneration.forward).parameters else "past_key_values"


class DecoderStepper:
    """Encoder once, then one decoder step at a time with a KV cache.

    ``input_ids/attention_mask (B, S)``; every query is expanded to ``expand`` hypotheses
    (rows ``b * expand + j``). :meth:`step` takes ``(N,)`` last tokens -> ``(N, V)`` float32
    log-probabilities; :meth:`reorder` selects/reorders rows (beam search).
    """

    def __init__(self, model, input_ids: Tensor, attention_mask: Tensor, expand: int = 1):
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache
        from transformers.modeling_outputs import BaseModelOutput

        self.model = model
        dev = next(model.parameters()).device
        input_ids, attention_mask = input_ids.to(dev), attention_mask.to(dev)
        hidden = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if expand > 1:
            hidden = hidden.repeat_interleave(expand, 0)
            attention_mask = attention_mask.repeat_interleave(expand, 0)
        self._wrap = BaseModelOutput
        self.hidden, self.mask = hidden, attention_mask
        self.cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        self.device = dev
        self._cache_arg = _kv_cache_argument()

    def step(self, tokens: Tensor) -> Tensor:
        out = self.model(
            encoder_outputs=self._wrap(last_hidden_state=self.hidden), attention_mask=self.mask,
            decoder_input_ids=tokens.to(self.device)[:, None], use_cache=True, **{self._cache_arg: self.cache},
        )
        self.cache = getattr(out, self._cache_arg)
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1)

    def reorder(self, rows: Tensor) -> None:
        rows = rows.to(self.device)
        self.cache.reorder_cache(rows)
        self.hidden, self.mask = self.hidden[rows], self.mask[rows]


@torch.no_grad()
def beam_search(model, input_ids: Tensor, attention_mask: Tensor, beam_size: int,
                trie: Optional[EntityTrie] = None, max_length: int = 32) -> tuple[Tensor, Tensor]:
    """Beam search, constrained to the trie's entity sequences when ``trie`` is given.

    Finished hypotheses stay in the beam with a frozen score (one ``<pad>`` continuation at cost 0);
    since log-probs are <= 0, decoding stops once all ``K`` best hypotheses are finished. With
    ``beam_size >= #entities`` and a trie nothing is ever pruned, i.e. the result is exact.

    Returns ``sequences (B, K, L)`` (generated ids after the start token) and
    ``scores (B, K)`` sequence log-probs (``-inf`` = no hypothesis), best first.
    """
    B, K = input_ids.shape[0], int(beam_size)
    N = B * K
    st = DecoderStepper(model, input_ids, attention_mask, expand=K)
    dev = st.device
    if trie is not None:
        trie = trie.to(dev)
        max_length = trie.depth
    scores = torch.full((B, K), float("-inf"), device=dev)
    scores[:, 0] = 0.0
    last = torch.full((N,), PAD_ID, dtype=torch.long, device=dev)
    nodes = torch.zeros(N, dtype=torch.long, device=dev)
    finished = torch.zeros(N, dtype=torch.bool, device=dev)
    hist = torch.zeros((N, 0), dtype=torch.long, device=dev)
    base = (torch.arange(B, device=dev) * K)[:, None]
    for _ in range(max_length):
        logp = st.step(last)  # (N, V)
        V = logp.shape[1]
        if trie is not None:
            logp = logp + trie.mask(torch.where(finished, torch.full_like(nodes, -1), nodes))
        logp[finished] = float("-inf")
        logp[finished, PAD_ID] = 0.0
        total = (scores.reshape(N, 1) + logp).reshape(B, K * V)
        top, idx = total.topk(K, dim=1)  # (B, K)
        rows = (base + torch.div(idx, V, rounding_mode="floor")).reshape(N)
        tok = (idx % V).reshape(N)
        st.reorder(rows)
        hist = torch.cat([hist[rows], tok[:, None]], 1)
        prev_fin = finished[rows]
        if trie is not None:
            nodes = torch.where(prev_fin, torch.full_like(nodes, -1), trie.step(nodes[rows], tok))
        finished = prev_fin | (tok == EOS_ID) | torch.isinf(top.reshape(N))
        scores, last = top, tok
        if bool(finished.all()):
            break
    scores = torch.where(finished.reshape(B, K), scores, torch.full_like(scores, float("-inf")))
    return hist.reshape(B, K, -1), scores


@torch.no_grad()
def sample(model, input_ids: Tensor, attention_mask: Tensor, num_samples: int,
           trie: Optional[EntityTrie] = None, max_length: int = 32, temperature: float = 1.0,
           greedy: bool = False, generator: Optional[torch.Generator] = None) -> tuple[Tensor, Tensor]:
    """Ancestral sampling (``greedy``: arg-max) of ``N`` sequences per query.

    The token is drawn from ``softmax(log p / temperature)`` (restricted to the trie when given);
    the returned score is the sequence log-prob under the model at temperature 1.
    Returns ``sequences (B, N, L)`` and ``scores (B, N)`` (``-inf`` where ``</s>`` was never produced).
    """
    B, n = input_ids.shape[0], (1 if greedy else int(num_samples))
    N = B * n
    st = DecoderStepper(model, input_ids, attention_mask, expand=n)
    dev = st.device
    if trie is not None:
        trie = trie.to(dev)
        max_length = trie.depth
    total = torch.zeros(N, device=dev)
    last = torch.full((N,), PAD_ID, dtype=torch.long, device=dev)
    nodes = torch.zeros(N, dtype=torch.long, device=dev)
    finished = torch.zeros(N, dtype=torch.bool, device=dev)
    out = []
    for _ in range(max_length):
        logp = st.step(last)
        pick = logp if trie is None else logp + trie.mask(nodes)
        if not greedy:
            u = torch.rand(pick.shape, device=dev, generator=generator).clamp_(1e-20, 1.0)
            pick = pick / temperature - torch.log(-torch.log(u))  # Gumbel-max = categorical sample
        tok = pick.argmax(1)
        tok = torch.where(finished, torch.full_like(tok, PAD_ID), tok)
        total = total + torch.where(finished, torch.zeros_like(total), logp.gather(1, tok[:, None])[:, 0])
        if trie is not None:
            nodes = trie.step(nodes, tok)
        finished = finished | (tok == EOS_ID)
        out.append(tok)
        last = tok
        if bool(finished.all()):
            break
    seqs = torch.stack(out, 1) if out else torch.zeros((N, 0), dtype=torch.long, device=dev)
    total = torch.where(finished, total, torch.full_like(total, float("-inf")))
    return seqs.reshape(B, n, -1), total.reshape(B, n)


@torch.no_grad()
def score_entities(model, input_ids: Tensor, attention_mask: Tensor, targets: Tensor,
                   entities: Optional[Tensor] = None, max_rows: int = 4096) -> Tensor:
    """Teacher-forced sequence log-probs: brute force over entity texts.

    ``targets (E, Lt)``: ``</s>``-terminated entity token ids (pad 0), or a
    :class:`~kgcomplete.seq2seq.trie.RaggedTokens` of them. ``entities``: ``None`` (all
    ``E``), ``(C,)`` shared or ``(B, C)`` per query. Returns ``(B, E)`` or ``(B, C)`` log-probs.
    """
    from transformers.modeling_outputs import BaseModelOutput

    dev = next(model.parameters()).device
    input_ids, attention_mask = input_ids.to(dev), attention_mask.to(dev)
    targets = targets.to(dev)  # a padded table, or RaggedTokens (rows gathered per block)
    B = input_ids.shape[0]
    if entities is None:
        entities = torch.arange(targets.shape[0], device=dev)
    entities = entities.to(dev)
    ent = entities.expand(B, -1) if entities.dim() == 1 else entities
    C = ent.shape[1]
    hidden = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    out = torch.empty((B, C), device=dev)
    flat_q = torch.arange(B, device=dev).repeat_interleave(C)
    flat_e = ent.reshape(-1)
    for s in range(0, B * C, max_rows):
        q, e = flat_q[s:s + max_rows], flat_e[s:s + max_rows]
        lab = targets[e].to(dev)
        width = int((lab != PAD_ID).sum(1).max())
        lab = lab[:, :width]
        dec_in = torch.cat([torch.full_like(lab[:, :1], PAD_ID), lab[:, :-1]], 1)
        logits = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden[q]), attention_mask=attention_mask[q],
                       decoder_input_ids=dec_in).logits
        lp = torch.log_softmax(logits.float(), -1).gather(2, lab[:, :, None])[:, :, 0]
        out.view(-1)[s:s + len(q)] = (lp * (lab != PAD_ID)).sum(1)
    return out


def densify(entities: Tensor, scores: Tensor, num_entities: int) -> Tensor:
    """Sparse ``(B, K)`` entity ids (-1 = none) and scores -> ``(B, E)``, ``-inf`` where not generated;
    duplicates keep their best score."""
    B = entities.shape[0]
    dense = torch.full((B, num_entities + 1), float("-inf"), device=scores.device)
    idx = torch.where(entities >= 0, entities, torch.full_like(entities, num_entities))
    dense.scatter_reduce_(1, idx, scores.float(), reduce="amax", include_self=True)
    return dense[:, :num_entities]


class QueryMemo:
    """Rows of per-query tensors kept by query key, for at most ``capacity`` distinct queries.

    :meth:`get` returns the rows of ``keys`` (int64), computing those not kept before with
    ``compute(rows)`` (``rows``: positions in ``keys``) -> a tuple of ``(len(rows), K)`` tensors;
    ``fills`` pads each tensor when a later ``K`` is wider. Past ``capacity`` queries nothing new is
    kept (the answer is still computed)."""

    def __init__(self, capacity: int, fills: tuple):
        self.capacity, self.fills = int(capacity), tuple(fills)
        self.keys: Optional[np.ndarray] = None  # sorted
        self.values: tuple[Tensor, ...] = ()

    def get(self, keys: np.ndarray, compute) -> tuple[Tensor, ...]:
        if len(keys) == 0:
            return compute(torch.zeros(0, dtype=torch.long))
        if self.keys is None:
            hit = np.zeros(len(keys), dtype=bool)
        else:
            pos = np.searchsorted(self.keys, keys).clip(0, len(self.keys) - 1)
            hit = self.keys[pos] == keys
        if hit.all():
            p = torch.as_tensor(pos)
            return tuple(v[p] for v in self.values)
        new_keys, first = np.unique(keys[~hit], return_index=True)
        fresh = compute(torch.as_tensor(np.flatnonzero(~hit)[first]))
        if self.keys is None:
            all_keys, values = new_keys, tuple(fresh)
        else:
            width = max(self.values[0].shape[1], fresh[0].shape[1])
            pad = lambda x, v: torch.nn.functional.pad(x, (0, width - x.shape[1]), value=v)  # noqa: E731
            order = np.argsort(np.concatenate([self.keys, new_keys]), kind="stable")
            o = torch.as_tensor(order)
            all_keys = np.concatenate([self.keys, new_keys])[order]
            values = tuple(torch.cat([pad(old, f), pad(new, f)])[o] for old, new, f in zip(self.values, fresh, self.fills))
        if len(all_keys) <= self.capacity:
            self.keys, self.values = all_keys, values
        p = torch.as_tensor(np.searchsorted(all_keys, keys))
        return tuple(v[p] for v in values)


class KGT5Scorer:
    """Implements ``score_queries`` for the shared evaluator (see the module docstring for the rule).

    Args:
        model: ``T5ForConditionalGeneration``.
        encoder: :class:`~kgcomplete.seq2seq.encoding.QueryEncoder` (token tables).
        trie: :class:`EntityTrie` of ``encoder.entity_ids``.
        method: ``beam`` | ``sample`` | ``greedy`` | ``exhaustive`` (teacher-force every entity).
        beam_size, num_samples, temperature: decoding parameters.
        constrained: restrict beam/sample/greedy to entity texts (trie).
        max_rows: hypotheses decoded at once (queries per chunk = max_rows // width).
        memo_queries: deterministic decodings (beam, greedy) of this many distinct queries are kept
            and reused: a run decodes its valid and test queries once for its metrics, then again
            for an ensemble's tuning and evaluation (0 = keep none); so are their other readings.
            The model and ``reverse_candidates`` must not change while a scorer holds them.
        reverse_weight, reverse_candidates: re-rank the best ``reverse_candidates`` decoded answers
            by both readings of their triple (:meth:`other_reading`, :func:`rerank`); 0 = one
            reading. Candidate scoring adds the weighted other reading of every candidate.
        known_answers, widen_for_known: ``known_answers(anchor, relation, head)`` -> ``(B,)`` int
            counts of each query's answers in the training graph. A beam search then keeps that many
            more hypotheses (by at most ``widen_for_known``, rounded up to a power of two; at most
            every entity), and ``reverse_candidates`` grows by as many: the answers the model learnt
            by heart (which filtered ranking removes) no longer push new ones out of the beam
            (:meth:`extra_hypotheses`). ``None`` or 0: a fixed width.
    """

    def __init__(self, model, encoder, trie: EntityTrie, method: str = "beam", beam_size: int = 10,
                 num_samples: int = 50, constrained: bool = True, temperature: float = 1.0,
                 max_rows: int = 2048, seed: int = 0, max_length: Optional[int] = None,
                 memo_queries: int = 200_000, reverse_weight: float = 0.0, reverse_candidates: int = 50,
                 known_answers=None, widen_for_known: int = 0):
        if method not in METHODS:
            raise ValueError(f"unknown decoding method {method!r}; choose from {METHODS}")
        if reverse_weight and method == "exhaustive":
            raise ValueError("kgt5.decoding.reverse_weight re-ranks decoded answers; exhaustive scoring "
                             "would read every entity's query the other way: set it to 0")
        self.reverse_weight, self.reverse_candidates = float(reverse_weight), int(reverse_candidates)
        self.known_answers, self.widen_for_known = known_answers, int(widen_for_known)
        self.model, self.encoder, self.trie = model, encoder, trie
        self.method, self.beam_size, self.num_samples = method, int(beam_size), int(num_samples)
        self.constrained, self.temperature, self.max_rows = bool(constrained), float(temperature), int(max_rows)
        # outputs longer than the longest entity sequence (incl. </s>) cannot be entities
        self.max_length = trie.depth if max_length is None else int(max_length)
        self.seed = seed
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.training = False
        self.memo_queries = int(memo_queries)
        self._decoded = QueryMemo(self.memo_queries, fills=(-1, float("-inf")))  # (Q, K) ids, (Q, K) log-probs
        self._others = QueryMemo(self.memo_queries, fills=(float("-inf"),))  # (Q, reverse_candidates)

    @property
    def num_entities(self) -> int:
        return self.trie.num_entities

    def eval(self) -> "KGT5Scorer":
        self.model.eval()
        return self

    def train(self, mode: bool = True) -> "KGT5Scorer":
        self.model.train(mode)
        return self

    def _width(self) -> int:
        return {"beam": self.beam_size, "sample": self.num_samples, "greedy": 1}.get(self.method, 1)

    def extra_hypotheses(self, anchor: Tensor, relation: Tensor, head: bool) -> np.ndarray:
        """``(B,)`` hypotheses a beam search adds to ``beam_size`` for each query: its number of
        training answers, capped at ``widen_for_known``, rounded up to a power of two (few distinct
        widths), the width capped at the number of entities. Zeros unless the scorer widens."""
        B = len(anchor)
        if self.method != "beam" or not self.widen_for_known or self.known_answers is None or B == 0:
            return np.zeros(B, np.int64)
        n = np.minimum(np.asarray(self.known_answers(anchor.cpu().numpy(), relation.cpu().numpy(), head),
                                  np.int64), self.widen_for_known)
        pow2 = np.left_shift(1, np.ceil(np.log2(np.maximum(n, 1))).astype(np.int64))
        extra = np.where(n > 0, np.minimum(pow2, self.widen_for_known), 0)
        return np.clip(np.minimum(extra, self.num_entities - self.beam_size), 0, None)

    @torch.no_grad()
    def topk(self, anchor: Tensor, relation: Tensor, head: bool = False,
             inputs: Optional[tuple[Tensor, Tensor]] = None) -> tuple[Tensor, Tensor]:
        """Generated entities per query: ``(B, K)`` entity ids (-1 = none) and ``(B, K)`` log-probs,
        sorted best first, duplicates removed (with ``reverse_weight``: the :func:`rerank` scores).
        ``inputs``: ready ``(input_ids, attention_mask)`` (QA); otherwise built from ``anchor``/``relation``."""
        if self.method == "exhaustive":
            raise ValueError("topk needs a decoding method; exhaustive scores all entities")
        extra = self.extra_hypotheses(anchor, relation, head) if inputs is None else None
        keys = None  # deterministic decodings (and their other readings) are kept per query
        if inputs is None and self.method != "sample" and self.memo_queries > 0 and \
                (len(relation) == 0 or int(relation.max()) < 2 ** 21):
            a, r = anchor.cpu().numpy().astype(np.int64), relation.cpu().numpy().astype(np.int64)
            keys = (a << 22) | (r << 1) | int(head)  # relations < 2**21
            ents, scores = self._decoded.get(keys, lambda rows: self._decode(anchor[rows], relation[rows], head,
                                                                              extra=extra[rows.numpy()]))
        else:
            ents, scores = self._decode(anchor, relation, head, inputs, extra)
        if self.reverse_weight and inputs is None:
            # each query re-ranks as many answers as its own decoding width allows (not this call's)
            counts = torch.as_tensor(min(self.reverse_candidates, self._width()) + extra)
            n = min(int(counts.max()) if len(counts) else 0, ents.shape[1])

            def read(rows):
                cand = ents[rows, :n].masked_fill(torch.arange(n) >= counts[rows, None], -1)
                return (self.other_reading(anchor[rows], relation[rows], head, cand),)

            other, = read(torch.arange(len(ents))) if keys is None else self._others.get(keys, read)
            ents, scores = rerank(ents, scores, other, self.reverse_weight, counts)
        return ents, scores

    @torch.no_grad()
    def other_reading(self, anchor: Tensor, relation: Tensor, head: bool, candidates: Tensor) -> Tensor:
        """The other reading of each candidate's triple: ``(B,)`` anchors and relations, ``(B, C)``
        candidate ids (-1 = none) -> ``(B, C)`` ``log p(anchor | c's query)``, ``-inf`` where none.

        For the tail query ``(h, r, ?)``, candidate ``c``'s query is the head query ``(?, r, c)``
        (read with ``c``'s own context), and the anchor ``h`` is teacher-forced as its answer; for a
        head query, the other way round. A reciprocal KGE model's ``model.reciprocal_scoring``.
        """
        anchor, relation, candidates = anchor.cpu(), relation.cpu(), candidates.cpu()
        out = torch.full(candidates.shape, float("-inf"))
        rows, cols = (candidates >= 0).nonzero(as_tuple=True)
        step = max(1, self.max_rows)
        for s in range(0, len(rows), step):
            q, c = rows[s:s + step], cols[s:s + step]
            ids, mask = self.encoder.queries(candidates[q, c], relation[q], not head)
            out[q, c] = score_entities(self.model, ids, mask, self.encoder.entity_ids, anchor[q][:, None],
                                       max_rows=self.max_rows)[:, 0].cpu()
        return out

    def _decode(self, anchor: Tensor, relation: Tensor, head: bool, inputs: Optional[tuple[Tensor, Tensor]] = None,
                extra: Optional[np.ndarray] = None) -> tuple[Tensor, Tensor]:
        """Decode each query at ``beam_size + extra`` (:meth:`extra_hypotheses`; None: the fixed width)."""
        if extra is None or not extra.any():
            return self._decode_at(self._width(), anchor, relation, head, inputs)
        B, widths = len(anchor), self.beam_size + extra  # one beam search per distinct width
        ents = torch.full((B, int(widths.max())), -1, dtype=torch.long)
        scores = torch.full((B, int(widths.max())), float("-inf"))
        for w in np.unique(widths):
            rows = torch.as_tensor(np.flatnonzero(widths == w))
            e, sc = self._decode_at(int(w), anchor[rows], relation[rows], head)
            ents[rows, :e.shape[1]], scores[rows, :sc.shape[1]] = e, sc
        return ents, scores

    def _decode_at(self, width: int, anchor: Tensor, relation: Tensor, head: bool,
                   inputs: Optional[tuple[Tensor, Tensor]] = None) -> tuple[Tensor, Tensor]:
        if inputs is None:
            inputs = self.encoder.queries(anchor, relation, head)
        ids_all, mask_all = inputs
        B = ids_all.shape[0]
        chunk = max(1, self.max_rows // width)
        trie = self.trie if self.constrained else None
        ents, scs = [], []
        for s in range(0, B, chunk):
            ids, mask = ids_all[s:s + chunk], mask_all[s:s + chunk]
            if self.method == "beam":
                seqs, sc = beam_search(self.model, ids, mask, width, trie, self.max_length)
            else:
                gen = self.generator if next(self.model.parameters()).device.type == "cpu" else None
                seqs, sc = sample(self.model, ids, mask, self.num_samples, trie, self.max_length,
                                  self.temperature, greedy=self.method == "greedy", generator=gen)
            b, k, L = seqs.shape
            e = self.trie.to(seqs.device).lookup(seqs.reshape(b * k, L)).reshape(b, k)
            sc = torch.where(e >= 0, sc, torch.full_like(sc, float("-inf")))
            e = torch.where(torch.isinf(sc), torch.full_like(e, -1), e)
            # dedupe (samples): keep each entity once with its best score
            order = sc.argsort(dim=1, descending=True)
            e, sc = e.gather(1, order), sc.gather(1, order)
            srt, pos = e.sort(dim=1, stable=True)
            dup = torch.zeros_like(srt, dtype=torch.bool)
            dup[:, 1:] = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
            dup = torch.zeros_like(dup).scatter_(1, pos, dup)
            sc = torch.where(dup, torch.full_like(sc, float("-inf")), sc)
            e = torch.where(dup, torch.full_like(e, -1), e)
            order = sc.argsort(dim=1, descending=True, stable=True)
            ents.append(e.gather(1, order).cpu())
            scs.append(sc.gather(1, order).cpu())
        if not ents:
            return torch.zeros((0, width), dtype=torch.long), torch.zeros((0, width))
        return torch.cat(ents), torch.cat(scs)

    @torch.no_grad()
    def score_queries(self, anchor: Tensor, r: Tensor, candidates: Optional[Tensor] = None,
                      head: bool = False) -> Tensor:
        """``(B,)`` anchors/relations -> ``(B, E)`` (or ``(B, C)`` for candidates) scores: generated
        entities' log-probs, ``-inf`` for entities never generated; candidates and ``exhaustive``
        are scored exactly by teacher forcing."""
        dev = anchor.device
        if candidates is not None or self.method == "exhaustive":
            ids, mask = self.encoder.queries(anchor, r, head)
            width = candidates.shape[-1] if candidates is not None else self.num_entities
            chunk = max(1, (self.max_rows * 8) // max(1, width))
            parts = []
            for s in range(0, len(ids), chunk):
                cand = None if candidates is None else (candidates if candidates.dim() == 1 else candidates[s:s + chunk])
                parts.append(score_entities(self.model, ids[s:s + chunk], mask[s:s + chunk], self.encoder.entity_ids,
                                            cand, max_rows=self.max_rows * 8).cpu())
            scores = torch.cat(parts)
            if self.reverse_weight and candidates is not None:
                cand = candidates.cpu().expand(len(anchor), -1) if candidates.dim() == 1 else candidates.cpu()
                scores = scores + self.reverse_weight * self.other_reading(anchor, r, head, cand)
            return scores.to(dev)
        e, sc = self.topk(anchor, r, head)
        return densify(e, sc, self.num_entities).to(dev)



# ------------------------------------------------------------------ sparse ranking and top-k
def rerank(entities: Tensor, scores: Tensor, other: Tensor, weight: float,
           counts: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Both readings for the best decoded answers: ``entities``/``scores (B, K)`` sorted best first
    (-1 / ``-inf`` = none), ``other (B, n)`` the other reading of the first ``n`` -> ``(B, K)`` sorted
    again. Each row's first ``counts[b]`` (default and at most ``n``) score ``scores + weight *
    other``; its other answers keep their order below all of them (their score shifted under the
    lowest re-ranked one)."""
    B, K = entities.shape
    other = other[:, :K].to(scores.dtype)
    n = other.shape[1]
    dev = entities.device
    limit = torch.full((B, 1), n, device=dev) if counts is None else \
        torch.as_tensor(counts, device=dev).clamp(max=n).reshape(B, 1)
    is_top = torch.arange(K, device=dev) < limit
    read = torch.nn.functional.pad(other, (0, K - n), value=0.0)
    top = torch.where(is_top & (entities >= 0), scores + weight * read, torch.full_like(scores, float("-inf")))
    floor = torch.where(is_top & torch.isfinite(top), top, torch.full_like(top, float("inf"))).amin(1, keepdim=True)
    last = scores.gather(1, (limit - 1).clamp(min=0)) if K else scores[:, :1]
    shifted = floor - 1 + (scores - last)  # <= floor - 1: scores are sorted
    rest = torch.where(torch.isfinite(scores) & torch.isfinite(floor), shifted, scores)
    new = torch.where(is_top, top, rest)
    order = new.argsort(dim=1, descending=True, stable=True)
    return entities.gather(1, order), new.gather(1, order)


def generated_ranks(entities: np.ndarray, scores: np.ndarray, answer: np.ndarray, known_q: np.ndarray,
                    known_e: np.ndarray, num_entities: int) -> np.ndarray:
    """Realistic filtered ranks of ``(B,)`` true answers from the decoder's output alone.

    ``entities (B, K)`` generated ids (-1 none, no duplicates) with ``scores (B, K)``; ``known_q``,
    ``known_e``: flat (query, entity) known answers to filter, the true answers left out (empty for
    raw ranking). Every entity not generated scores ``-inf``, so: a generated answer ranks
    ``1 + #higher + #equal / 2`` among the generated unfiltered others; an answer never generated
    ranks ``1 + #generated + #never-generated / 2`` among the ``E - 1 - #known`` unfiltered others.
    """
    B = len(answer)
    ok = (entities >= 0) & np.isfinite(scores)
    is_answer = ok & (entities == answer[:, None])
    target = np.where(is_answer, scores, -np.inf).max(1, initial=-np.inf)
    other = ok & ~is_answer
    n_known = np.zeros(B, np.int64)
    if len(known_q):
        gen_keys = np.arange(B, dtype=np.int64)[:, None] * num_entities + entities
        other &= ~np.isin(gen_keys, known_q * np.int64(num_entities) + known_e)
        n_known = np.bincount(known_q, minlength=B)
    better = (other & (scores > target[:, None])).sum(1)
    tied = np.where(np.isfinite(target), (other & (scores == target[:, None])).sum(1),
                    num_entities - 1 - n_known - other.sum(1))  # the never-generated others all tie at -inf
    return realistic_rank(better, tied)


def evaluate_generated(scorer: "KGT5Scorer", dataset, split: str = "test", filtered: bool = True,
                       filter_index=None, directions: Sequence[str] = ("head", "tail"), per_relation: bool = True,
                       progress: bool = False) -> dict:
    """Metrics of ``scorer`` (beam / sample / greedy decoding) on ``dataset.splits[split]`` from
    :meth:`KGT5Scorer.topk` and :func:`generated_ranks`: the shared evaluator's numbers for the
    all-entities protocol without its ``(queries, E)`` score chunks. ``directions``: the query
    sides ranked (a checkpoint trained on tail queries only: ``("tail",)``)."""
    from ..console import bars_wanted
    from ..evaluation.filter_index import FilterIndex

    if scorer.method == "exhaustive":
        raise ValueError("evaluate_generated ranks decoded entities; exhaustive scoring uses the shared evaluator")
    if filtered and filter_index is None:
        filter_index = FilterIndex.from_dataset(dataset)
    triples = np.asarray(dataset.splits[split], dtype=np.int64)
    E, n = dataset.num_entities, len(triples)
    chunk = max(1, scorer.max_rows // scorer._width())
    ranks = {}
    for side in directions:
        head = side == "head"
        anchor_col, answer_col = (2, 0) if head else (0, 2)
        out = np.empty(n, dtype=np.float64)
        starts = range(0, n, chunk)
        if bars_wanted(progress):
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"decoding {side}s", unit="chunk", leave=False)
        for s in starts:
            b = triples[s:s + chunk]
            ents, sc = scorer.topk(torch.as_tensor(b[:, anchor_col]), torch.as_tensor(b[:, 1]), head)
            answer = b[:, answer_col]
            q = ent = np.zeros(0, np.int64)
            if filtered:
                q, ent = filter_index.known(b[:, anchor_col], b[:, 1], head=head)
                keep = ent != answer[q]
                q, ent = q[keep], ent[keep]
            out[s:s + len(b)] = generated_ranks(ents.numpy(), sc.numpy(), answer, q, ent, E)
        ranks[side] = out
    if set(directions) == {"head", "tail"}:
        metrics = RankingResult(triples, ranks["head"], ranks["tail"]).metrics(dataset.relations.labels, per_relation)
    else:
        (side,) = directions
        metrics = {**metrics_from_ranks(ranks[side]), side: metrics_from_ranks(ranks[side])}
    metrics.update(filtered=bool(filtered), protocol="all-entities", directions=list(directions))
    return metrics


def generated_top_k(scorer: "KGT5Scorer", dataset, known, anchor: np.ndarray, r: np.ndarray, head: bool,
                    k: int = 10, exclude_known: bool = False) -> list[list[dict]]:
    """:func:`~kgcomplete.runs.protocol.top_k_predictions` from the decoder's ``(B, K)`` output: the
    same rows (``probability`` = softmax over all entities, never-generated ones at ``-inf``),
    without a ``(B, E)`` score matrix."""
    from ..runs.protocol import prediction_rows

    anchor, r = np.asarray(anchor, np.int64), np.asarray(r, np.int64)
    ents, sc = scorer.topk(torch.as_tensor(anchor), torch.as_tensor(r), head)
    ents, sc = ents.numpy(), sc.numpy().astype(np.float64)
    sc = np.where(ents >= 0, sc, -np.inf)
    top = sc.max(1, initial=-np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        norms = np.where(np.isfinite(top), top + np.log(np.exp(sc - top[:, None]).sum(1)), -np.inf)
    if exclude_known:
        q, ent = known.index("all").known(anchor, r, head=head)
        E = np.int64(dataset.num_entities)
        hit = np.isin(np.arange(len(anchor), dtype=np.int64)[:, None] * E + ents, q * E + ent)
        sc[hit] = -np.inf
    order = np.argsort(-sc, axis=1, kind="stable")[:, :max(1, int(k))]
    ids, vals = np.take_along_axis(ents, order, 1), np.take_along_axis(sc, order, 1)
    return prediction_rows(dataset, known, anchor, r, head, ids, vals, norms)
