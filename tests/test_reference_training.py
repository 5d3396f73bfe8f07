"""Training against references written out here: every loss (value and gradient), every optimizer
update and the negative sampler's distributions, each compared with a NumPy formula (the references
never call library code)."""

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

import reference
from kgcomplete.models import build_model
from kgcomplete.training.loss import _SoftplusRowMean, kvsall_loss, negative_sampling_loss, one_vs_all_loss
from kgcomplete.training.negative_sampler import NegativeSampler
from kgcomplete.training.optimizers import (build_optimizer, optimizer_state_from_tensors, optimizer_state_tensors,
                                            round_to)


pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")  # raised inside torch's Adagrad


# ------------------------------------------------------------------------------ NumPy references
def softplus(x):
    return np.logaddexp(0.0, x)


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


def log_softmax(x):
    z = x - x.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def onehot(idx, n):
    out = np.zeros((len(idx), n))
    out[np.arange(len(idx)), idx] = 1.0
    return out


def library(fn, *arrays, dtype=torch.float64, **kw):
    """Value and gradients (w.r.t. every array) of the library loss ``fn`` through autograd."""
    ts = [torch.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    loss = fn(*ts, **kw)
    loss.backward()
    return loss.item(), [t.grad.double().numpy() for t in ts]


def close(actual, expected, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


B, N = 5, 7


@pytest.fixture
def scores():
    """Positive ``(B,)`` and negative ``(B, N)`` scores, one row far out in both tails."""
    rng = np.random.default_rng(0)
    pos = rng.normal(0, 3, B)
    neg = rng.normal(0, 3, (B, N))
    pos[-1] = -100.0  # softplus(-m - pos) ~ 94..100: the linear tail
    neg[-1, :3] = [90.0, 150.0, -200.0]  # beyond the exp clamp (z > 80) and an exp underflow
    return pos, neg


# ------------------------------------------------------------------------------------------ losses
@pytest.mark.parametrize("margin", [0.0, 6.0])
def test_logsigmoid_uniform_weights(scores, margin):
    """RotatE loss (the RotatE code halves the sum of the two means):
    ``mean_b [softplus(-m - pos_b) + mean_j softplus(neg_bj + m)] / 2``."""
    pos, neg = scores
    ref = (softplus(-margin - pos) + softplus(neg + margin).mean(1)).mean() / 2
    d_pos = -sigmoid(-margin - pos) / (2 * B)
    d_neg = sigmoid(neg + margin) / (2 * B * N)
    for dtype, rtol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
        val, (g_pos, g_neg) = library(negative_sampling_loss, pos, neg, kind="logsigmoid", margin=margin, dtype=dtype)
        close(val, ref, rtol=rtol)
        close(g_pos, d_pos, rtol=rtol, atol=1e-12 if dtype == torch.float64 else 1e-9)
        close(g_neg, d_neg, rtol=rtol, atol=1e-12 if dtype == torch.float64 else 1e-9)


def test_fused_softplus_row_mean_against_formula_and_gradcheck():
    x = np.array([[-300.0, -40.0, -3.0, 0.0, 2.5, 74.5, 81.0, 400.0]])  # z = x + 6 spans both clamp sides
    for dtype in (torch.float64, torch.float32):
        out = _SoftplusRowMean.apply(torch.tensor(x, dtype=dtype), 6.0)
        close(out.double().numpy(), softplus(x + 6.0).mean(1), rtol=1e-6 if dtype == torch.float32 else 1e-12)
    xt = torch.tensor(np.random.default_rng(1).normal(0, 30, (4, 9)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: _SoftplusRowMean.apply(v, 6.0), (xt,))


@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_logsigmoid_self_adversarial_weights_are_a_detached_softmax(scores, temperature):
    pos, neg = scores
    m = 6.0
    z = temperature * neg
    w = np.exp(log_softmax(z))  # per row, over the negatives; a constant for the gradient
    ref = (softplus(-m - pos) + (w * softplus(neg + m)).sum(1)).mean() / 2
    d_pos = -sigmoid(-m - pos) / (2 * B)
    d_neg = w * sigmoid(neg + m) / (2 * B)  # no d w / d neg term
    val, (g_pos, g_neg) = library(negative_sampling_loss, pos, neg, kind="logsigmoid", margin=m,
                                  adversarial_temperature=temperature)
    close(val, ref)
    close(g_pos, d_pos)
    close(g_neg, d_neg)


@pytest.mark.parametrize("margin", [1.0, 6.0])
def test_margin_ranking(scores, margin):
    pos, neg = scores
    pos, neg = pos[:-1], neg[:-1]  # ordinary values; the hinge is linear anyway
    b = len(pos)
    z = margin - pos[:, None] + neg
    active = (z > 0).astype(float)
    assert 0 < active.sum() < active.size  # both sides of the hinge are exercised
    ref = np.maximum(z, 0).mean()
    val, (g_pos, g_neg) = library(negative_sampling_loss, pos, neg, kind="margin", margin=margin)
    close(val, ref)
    close(g_neg, active / (b * N))
    close(g_pos, -active.sum(1) / (b * N))


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_sampled_bce(scores, eps):
    pos, neg = scores
    x = np.concatenate([pos[:, None], neg], 1)
    c = N + 1
    t = onehot(np.zeros(B, int), c)
    t = t * (1 - eps) + eps / c
    ref = (softplus(x) - t * x).mean()  # -t log s(x) - (1 - t) log(1 - s(x))
    d = (sigmoid(x) - t) / (B * c)
    val, (g_pos, g_neg) = library(negative_sampling_loss, pos, neg, kind="bce", label_smoothing=eps)
    close(val, ref)
    close(g_pos, d[:, 0])
    close(g_neg, d[:, 1:])


@pytest.mark.parametrize("kind", ["softmax", "ce"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_sampled_softmax(scores, kind, eps):
    pos, neg = scores
    x = np.concatenate([pos[:, None], neg], 1)
    c = N + 1
    q = onehot(np.zeros(B, int), c) * (1 - eps) + eps / c
    ref = -(q * log_softmax(x)).sum(1).mean()
    d = (np.exp(log_softmax(x)) - q) / B
    val, (g_pos, g_neg) = library(negative_sampling_loss, pos, neg, kind=kind, label_smoothing=eps)
    close(val, ref)
    close(g_pos, d[:, 0])
    close(g_neg, d[:, 1:])


E = 9


@pytest.fixture
def full_scores():
    rng = np.random.default_rng(2)
    s = rng.normal(0, 4, (B, E))
    s[0, 0] = 120.0  # large logits stay exact
    return s


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_one_vs_all_ce(full_scores, eps):
    target = np.array([0, 3, 8, 3, 1])
    q = onehot(target, E) * (1 - eps) + eps / E
    ref = -(q * log_softmax(full_scores)).sum(1).mean()
    d = (np.exp(log_softmax(full_scores)) - q) / B
    val, (g,) = library(lambda s: one_vs_all_loss(s, torch.as_tensor(target), "ce", eps), full_scores)
    close(val, ref)
    close(g, d)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_one_vs_all_bce(full_scores, eps):
    target = np.array([0, 3, 8, 3, 1])
    t = (1 - eps) * onehot(target, E) + (1.0 / E if eps else 0.0)  # ConvE's smoothing: (1 - eps) t + 1/E
    ref = (softplus(full_scores) - t * full_scores).mean()
    d = (sigmoid(full_scores) - t) / (B * E)
    val, (g,) = library(lambda s: one_vs_all_loss(s, torch.as_tensor(target), "bce", eps), full_scores)
    close(val, ref)
    close(g, d)


@pytest.fixture
def multi_hot():
    t = np.zeros((B, E))
    t[0, [0, 2]] = 1
    t[1, [4]] = 1
    t[2, [1, 5, 6, 8]] = 1
    t[4, :] = 1  # row 3 has no true entity at all
    return t


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_kvsall_bce(full_scores, multi_hot, eps):
    t = (1 - eps) * multi_hot + (1.0 / E if eps else 0.0)
    ref = (softplus(full_scores) - t * full_scores).mean()
    d = (sigmoid(full_scores) - t) / (B * E)
    val, (g,) = library(lambda s: kvsall_loss(s, torch.as_tensor(multi_hot), "bce", eps), full_scores)
    close(val, ref)
    close(g, d)


def test_kvsall_ce(full_scores, multi_hot):
    """Cross-entropy against the targets normalised to a distribution (an all-zero row adds 0)."""
    p = multi_hot / np.maximum(multi_hot.sum(1, keepdims=True), 1)
    ref = -(p * log_softmax(full_scores)).sum(1).mean()
    d = (np.exp(log_softmax(full_scores)) * p.sum(1, keepdims=True) - p) / B
    assert not d[3].any()
    val, (g,) = library(lambda s: kvsall_loss(s, torch.as_tensor(multi_hot), "ce"), full_scores)
    close(val, ref)
    close(g, d)


def test_unknown_loss_kinds_are_refused():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="logsigmoid"):
        negative_sampling_loss(x[:, 0], x, kind="hinge")
    with pytest.raises(ValueError, match="ce \\| bce"):
        one_vs_all_loss(x, torch.tensor([0, 1]), "margin")
    with pytest.raises(ValueError, match="bce \\| ce"):
        kvsall_loss(x, x, "softmax")


# -------------------------------------------------------------------------------------- optimizers
ROWS, WIDTH, LR = 6, 4, 0.05
#: rows (with repeats: a sparse .grad sums them) each step touches in the table
STEP_ROWS = [[0, 2, 2], [2, 3], [0, 5, 3, 0]]


class Tiny(nn.Module):
    """A sparse embedding table plus dense parameters (2-D weight, 1-D bias)."""

    def __init__(self, sparse: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(ROWS, WIDTH, sparse=sparse)
        self.lin = nn.Linear(WIDTH, 3)


def fixed_grads(step: int, shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """Fixed float32 gradients of step ``step``: table rows ``(len(STEP_ROWS[step]), W)``, dense arrays."""
    rng = np.random.default_rng(100 + step)
    out = {"table": rng.normal(0, 1, (len(STEP_ROWS[step]), WIDTH)).astype(np.float32)}
    for k, s in shapes.items():
        out[k] = rng.normal(0, 1, s).astype(np.float32)
    return out


def dense_table_grad(step: int, g_rows: np.ndarray) -> np.ndarray:
    g = np.zeros((ROWS, WIDTH))
    np.add.at(g, STEP_ROWS[step], g_rows.astype(np.float64))
    return g


def set_tiny_grads(model: Tiny, step: int, table_grad: str = "sparse") -> dict[str, np.ndarray]:
    """Put step ``step``'s fixed gradients on ``model`` (table: sparse with repeated rows, or dense);
    returns them as dense float64 arrays by parameter name."""
    shapes = {"lin.weight": tuple(model.lin.weight.shape), "lin.bias": tuple(model.lin.bias.shape)}
    g = fixed_grads(step, shapes)
    ids = torch.tensor(STEP_ROWS[step])
    if table_grad == "sparse":
        model.emb.weight.grad = torch.sparse_coo_tensor(ids.unsqueeze(0), torch.as_tensor(g["table"]), (ROWS, WIDTH),
                                                        check_invariants=True)
    else:
        model.emb.weight.grad = torch.as_tensor(dense_table_grad(step, g["table"]), dtype=torch.float32)
    model.lin.weight.grad = torch.as_tensor(g["lin.weight"])
    model.lin.bias.grad = torch.as_tensor(g["lin.bias"])
    return {"emb.weight": dense_table_grad(step, g["table"]),
            "lin.weight": g["lin.weight"].astype(np.float64), "lin.bias": g["lin.bias"].astype(np.float64)}


def params_np(model) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy().copy() for k, v in model.named_parameters()}


def untouched(step: int) -> np.ndarray:
    return np.setdiff1d(np.arange(ROWS), STEP_ROWS[step])


class NpAdagrad:
    """torch's Adagrad: ``S += g^2`` per element, ``p -= lr g / (sqrt(S) + eps)``."""

    def __init__(self, eps=1e-10):
        self.eps, self.S = eps, {}

    def step(self, p, g, name):
        S = self.S.setdefault(name, np.zeros_like(p))
        S += g * g
        return p - LR * g / (np.sqrt(S) + self.eps)


class NpRowAdagrad:
    """Row-wise Adagrad: ``A_i += mean_k g_ik^2`` per row (per element for 1-D parameters),
    ``p_i -= lr g_i / (sqrt(A_i) + eps)``."""

    def __init__(self, eps=1e-10):
        self.eps, self.A = eps, {}

    def step(self, p, g, name, touched=None):
        if p.ndim == 1:
            A = self.A.setdefault(name, np.zeros(p.shape))
            A += g * g
            return p - LR * g / (np.sqrt(A) + self.eps)
        A = self.A.setdefault(name, np.zeros(p.shape[0]))
        rows = np.arange(p.shape[0]) if touched is None else touched
        acc = A[rows]
        out = p.copy()
        flat = reference.row_adagrad(p[rows].reshape(len(rows), -1), g[rows].reshape(len(rows), -1), acc, LR, self.eps)
        out[rows] = flat.reshape(p[rows].shape)
        A[rows] = acc
        return out


class NpAdam:
    """torch's Adam (dense) and SparseAdam (only the touched rows' moments move; one step count)."""

    def __init__(self, b1=0.9, b2=0.999, eps=1e-8):
        self.b1, self.b2, self.eps, self.m, self.v, self.t = b1, b2, eps, {}, {}, {}

    def step(self, p, g, name, touched=None):
        m = self.m.setdefault(name, np.zeros_like(p))
        v = self.v.setdefault(name, np.zeros_like(p))
        t = self.t[name] = self.t.get(name, 0) + 1
        bc1, bc2 = 1 - self.b1**t, 1 - self.b2**t
        rows = slice(None) if touched is None else touched
        m[rows] = self.b1 * m[rows] + (1 - self.b1) * g[rows]
        v[rows] = self.b2 * v[rows] + (1 - self.b2) * g[rows] ** 2
        out = p.copy()
        if touched is None:  # Adam: eps after the bias-corrected sqrt(v)
            out = p - LR / bc1 * m / (np.sqrt(v) / np.sqrt(bc2) + self.eps)
        else:  # SparseAdam: step size lr sqrt(bc2) / bc1, eps on sqrt(v)
            out[rows] = p[rows] - LR * np.sqrt(bc2) / bc1 * m[rows] / (np.sqrt(v[rows]) + self.eps)
        return out


class NpSGD:
    def step(self, p, g, name, touched=None):
        return p - LR * g


def reference_step(ref, name, p, g, step, table_sparse):
    if name == "emb.weight" and table_sparse and not isinstance(ref, NpAdagrad):
        return ref.step(p, g, name, touched=np.unique(STEP_ROWS[step]))
    return ref.step(p, g, name)


@pytest.mark.parametrize("opt_name,ref_cls", [("adagrad", NpAdagrad), ("rowadagrad", NpRowAdagrad),
                                              ("adam", NpAdam), ("sgd", NpSGD)])
@pytest.mark.parametrize("table_grad", ["sparse", "dense"])
def test_optimizer_steps_follow_their_formula(opt_name, ref_cls, table_grad):
    """Three steps with fixed gradients (sparse .grad with repeated rows, or a dense .grad)."""
    model = Tiny(sparse=table_grad == "sparse")
    opt = build_optimizer(opt_name, model, LR)
    kinds = [type(o).__name__ for o in opt.optimizers]
    if opt_name == "adam":
        assert kinds == (["SparseAdam", "Adam"] if table_grad == "sparse" else ["Adam"])
    ref, expected = ref_cls(), params_np(model)
    for step in range(3):
        before = model.emb.weight.detach().clone()
        grads = set_tiny_grads(model, step, table_grad)
        opt.step()
        expected = {k: reference_step(ref, k, expected[k], grads[k], step, table_grad == "sparse") for k in expected}
        got = params_np(model)
        for k in expected:
            close(got[k], expected[k], rtol=2e-6, atol=1e-7)
        if table_grad == "sparse":  # only the rows in the batch moved, bit for bit
            assert torch.equal(model.emb.weight[untouched(step)], before[untouched(step)])
            assert (model.emb.weight[STEP_ROWS[step]] != before[STEP_ROWS[step]]).any(1).all()
    if opt_name == "adagrad":  # the accumulator is per element
        close(opt.optimizers[0].state[model.emb.weight]["sum"].double().numpy(), ref.S["emb.weight"], rtol=1e-6)
    if opt_name == "rowadagrad":  # one float32 accumulator per row (per element for the 1-D bias)
        state = opt.optimizers[0].state
        for p, k in ((model.emb.weight, "emb.weight"), (model.lin.weight, "lin.weight"), (model.lin.bias, "lin.bias")):
            acc = state[p]["sum"]
            assert acc.dtype == torch.float32 and acc.shape == p.shape[:1], k
            close(acc.double().numpy(), ref.A[k], rtol=1e-6)


def test_row_adagrad_update_rows_follows_the_formula():
    """``update_rows`` (distinct rows, float32 gradient) with ``step()`` for the dense layer."""
    model = Tiny()
    opt = build_optimizer("rowadagrad", model, LR)
    row_opt = opt.optimizers[0]
    ref, expected = NpRowAdagrad(), params_np(model)
    for step in range(3):
        grads = set_tiny_grads(model, step)
        model.emb.weight.grad = None  # the table goes through update_rows instead
        rows = np.unique(STEP_ROWS[step])
        row_opt.update_rows(model.emb.weight, torch.as_tensor(rows), torch.as_tensor(grads["emb.weight"][rows],
                                                                                    dtype=torch.float32))
        opt.step()
        expected = {k: ref.step(expected[k], grads[k], k, touched=rows if k == "emb.weight" else None)
                    for k in expected}
        got = params_np(model)
        for k in expected:
            close(got[k], expected[k], rtol=2e-6, atol=1e-7)
    close(row_opt.state[model.emb.weight]["sum"].double().numpy(), ref.A["emb.weight"], rtol=1e-6)


def low_precision_model(dtype: str):
    torch.manual_seed(0)
    return build_model("distmult", ROWS, 3, dim=WIDTH, storage_dtype=dtype, init_scale=0.5)


def set_pending(model, step: int) -> np.ndarray:
    """Queue step ``step``'s table gradient as two pending float32 chunks (as the lookup's backward
    does), the second repeating a row of the first; returns the summed dense gradient."""
    g = fixed_grads(step, {})["table"]
    ids = torch.tensor(STEP_ROWS[step])
    w = model.entity_emb.weight
    w.pending_row_grads = [(ids[:2], torch.as_tensor(g[:2])), (ids[2:], torch.as_tensor(g[2:]))]
    return dense_table_grad(step, g)


def test_row_adagrad_float16_table_rounds_the_float32_update_to_nearest():
    model = low_precision_model("float16")
    w = model.entity_emb.weight
    assert w.dtype == torch.float16
    opt = build_optimizer("rowadagrad", model, LR)
    ref, expected = NpRowAdagrad(), w.detach().double().numpy().copy()
    for step in range(3):
        before = w.detach().clone()
        g = set_pending(model, step)
        opt.step()
        assert w.pending_row_grads == []  # consumed
        rows = np.unique(STEP_ROWS[step])
        exact = ref.step(expected, g, "table", touched=rows)
        expected = exact.astype(np.float16).astype(np.float64)  # round to nearest, then stored
        assert (expected[rows] != before.double().numpy()[rows]).any()  # an update larger than half an ulp
        np.testing.assert_array_equal(w.detach().double().numpy(), expected)
    acc = opt.optimizers[0].state[w]["sum"]
    assert acc.dtype == torch.float32 and acc.shape == (ROWS,)
    close(acc.double().numpy(), ref.A["table"], rtol=1e-6)


def bf16_neighbours(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The bfloat16 values just below and above (in magnitude) float32 ``x``: truncate the low 16 bits,
    and that plus one bfloat16 ulp."""
    bits = np.asarray(x, np.float32).view(np.uint32)
    lo = (bits & np.uint32(0xFFFF0000)).view(np.float32)
    hi = ((bits & np.uint32(0xFFFF0000)) + np.uint32(0x10000)).view(np.float32)
    return lo.astype(np.float64), hi.astype(np.float64)


def test_bfloat16_stochastic_rounding_is_unbiased_between_the_two_neighbours():
    torch.manual_seed(0)
    n = 40_000
    for v in (1.0 + 2**-10, -3.3, 0.1234567, 7.0e-4, -1.0e3 - 0.37):
        x32 = np.float32(v)
        lo, hi = bf16_neighbours(x32)
        r = round_to(torch.full((n,), float(x32)), torch.bfloat16).double().numpy()
        assert np.isin(r, [lo, hi]).all(), v  # always one of the two neighbours
        f = (float(x32) - lo) / (hi - lo)  # probability of rounding away from zero
        assert 0 < f < 1
        sd = abs(hi - lo) * np.sqrt(f * (1 - f) / n)
        assert abs(r.mean() - float(x32)) < 6 * sd, v  # unbiased (a 6-sigma bound: p ~ 2e-9)
    exact = torch.tensor([1.0, -2.5, 0.0, 3.0 * 2**-20])  # bfloat16 values stay as they are
    for _ in range(5):
        assert torch.equal(round_to(exact, torch.bfloat16).float(), exact)


def test_row_adagrad_bfloat16_table_rounds_stochastically():
    """Many identical rows with the same gradient: every stored row is one of the two bfloat16
    neighbours of the float32 update, and their mean is the update."""
    torch.manual_seed(0)
    rows, width = 20_000, 2
    table = nn.Embedding(rows, width, dtype=torch.bfloat16)
    model = nn.Module()
    model.emb = table
    with torch.no_grad():
        table.weight.fill_(1.0)
    opt = build_optimizer("rowadagrad", model, 1e-3)
    g = np.array([0.3, -0.4], np.float32)
    table.weight.pending_row_grads = [(torch.arange(rows), torch.as_tensor(np.tile(g, (rows, 1))))]
    opt.step()
    acc = np.mean(g.astype(np.float64) ** 2)
    new = 1.0 - 1e-3 * g / (np.sqrt(acc) + 1e-10)  # 1 -+ 0.0012: between bfloat16 neighbours
    got = table.weight.detach().double().numpy()
    for k in range(width):
        lo, hi = bf16_neighbours(np.float32(new[k]))
        assert lo != hi and np.isin(got[:, k], [lo, hi]).all()
        f = (new[k] - lo) / (hi - lo)
        sd = abs(hi - lo) * np.sqrt(f * (1 - f) / rows)
        assert abs(got[:, k].mean() - new[k]) < 6 * sd
    close(opt.optimizers[0].state[table.weight]["sum"].numpy(), np.full(rows, acc), rtol=1e-6)


def test_low_precision_tables_need_row_adagrad():
    model = low_precision_model("float16")
    for name in ("adagrad", "adam", "sgd"):
        with pytest.raises(ValueError, match="rowadagrad"):
            build_optimizer(name, model, LR)


# ------------------------------------------------------------------------- optimizer state round trip
def save_and_reload(opt):
    """Optimizer state through safetensors bytes and a JSON skeleton, as run folders store it."""
    tensors, skeleton = optimizer_state_tensors(opt)
    return optimizer_state_from_tensors(st_load(st_save(tensors)), json.loads(json.dumps(skeleton)))


@pytest.mark.parametrize("opt_name", ["adagrad", "rowadagrad", "adam", "sgd"])
def test_optimizer_state_round_trip_takes_the_identical_next_step(opt_name):
    model = Tiny()
    opt = build_optimizer(opt_name, model, LR)
    for step in range(2):
        set_tiny_grads(model, step)
        opt.step()
    state = save_and_reload(opt)
    twin = copy.deepcopy(model)
    fresh = copy.deepcopy(model)
    twin_opt = build_optimizer(opt_name, twin, LR)
    twin_opt.load_state_dict(state)
    fresh_opt = build_optimizer(opt_name, fresh, LR)
    for m, o in ((model, opt), (twin, twin_opt), (fresh, fresh_opt)):
        set_tiny_grads(m, 2)
        o.step()
    for (k, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), k
    if opt_name != "sgd":  # stateful: a fresh optimizer would have stepped differently
        assert not torch.equal(model.emb.weight, fresh.emb.weight)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_row_adagrad_state_round_trip_keeps_float32_rows_for_low_precision_tables(dtype):
    """torch's load_state_dict casts floating state to the parameter's dtype; the row accumulator
    of a float16/bfloat16 table must come back float32 and unrounded."""
    model = low_precision_model(dtype)
    opt = build_optimizer("rowadagrad", model, LR)
    w = model.entity_emb.weight
    for step in range(2):
        set_pending(model, step)
        opt.step()
    acc = opt.optimizers[0].state[w]["sum"].clone()
    acc[1] += 1e-4  # not a float16 / bfloat16 value
    opt.optimizers[0].state[w]["sum"].copy_(acc)
    twin = copy.deepcopy(model)
    twin_opt = build_optimizer("rowadagrad", twin, LR)
    twin_opt.load_state_dict(save_and_reload(opt))
    twin_acc = twin_opt.optimizers[0].state[twin.entity_emb.weight]["sum"]
    assert twin_acc.dtype == torch.float32 and torch.equal(twin_acc, acc)
    for m, o in ((model, opt), (twin, twin_opt)):
        set_pending(m, 2)
        torch.manual_seed(5)  # the same stochastic rounding draws
        o.step()
    assert torch.equal(w, twin.entity_emb.weight)


# ------------------------------------------------------------------------------- negative sampler
def chi2_limit(df: int, z: float = 6.0) -> float:
    """Upper chi-square quantile at a normal z (Wilson-Hilferty); z=6: p ~ 1e-9, so no flakes."""
    return df * (1 - 2 / (9 * df) + z * np.sqrt(2 / (9 * df))) ** 3


def chi2_uniform(counts: np.ndarray) -> float:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


def test_uniform_negatives_are_uniform_and_independent():
    ne, nn_ = 25, 40
    s = NegativeSampler(ne, nn_, generator=torch.Generator().manual_seed(0))
    draws = torch.stack([s.sample(torch.zeros(3, dtype=torch.long)) for _ in range(2500)]).numpy()
    assert draws.shape == (2500, nn_) and draws.min() >= 0 and draws.max() < ne
    counts = np.bincount(draws.ravel(), minlength=ne)
    assert chi2_uniform(counts) < chi2_limit(ne - 1)
    pairs = np.bincount((draws[:, :-1] * ne + draws[:, 1:]).ravel(), minlength=ne * ne)  # neighbours in a draw
    assert chi2_uniform(pairs) < chi2_limit(ne * ne - 1)
    # the test has power: a sampler that never draws the last entity fails it
    skewed = np.bincount(np.minimum(draws.ravel(), ne - 2), minlength=ne)
    assert chi2_uniform(skewed) > chi2_limit(ne - 1)


def test_type_constrained_negatives_stay_in_type_and_are_uniform_within_it():
    # types interleaved, an id gap (no type 2), and untyped entities (-1) forming their own group
    types = np.array([0, 1, 0, 3, -1, 1, 0, 3, 3, -1, 0, 1, 3, 0, -1])
    groups = {t: np.flatnonzero(types == t) for t in (0, 1, 3, -1)}
    s = NegativeSampler(len(types), 30, "type", types, generator=torch.Generator().manual_seed(0))
    corrupted = torch.tensor([0, 5, 3, 4, 2, 9, 1])  # types 0, 1, 3, -1, 0, -1, 1
    counts = {t: np.zeros(len(types), int) for t in groups}
    for _ in range(600):
        neg = s.sample(corrupted).numpy()
        assert neg.shape == (len(corrupted), 30)
        for i, e in enumerate(corrupted.tolist()):
            assert (types[neg[i]] == types[e]).all()  # only the positive's type
        assert (neg[0] == neg[4]).all() and (neg[1] == neg[6]).all() and (neg[3] == neg[5]).all()  # shared per type
        for t in groups:
            row = [i for i, e in enumerate(corrupted.tolist()) if types[e] == t][0]
            counts[t] += np.bincount(neg[row], minlength=len(types))
    for t, members in groups.items():
        c = counts[t][members]
        assert counts[t].sum() == c.sum() == 600 * 30
        assert chi2_uniform(c) < chi2_limit(len(members) - 1), (t, c)


def test_seeded_samplers_are_reproducible():
    types = np.array([0, 1, 0, 1, 1, 2, 2, 0])
    for strategy, kw in (("uniform", {}), ("type", {"entity_types": types})):
        corrupted = torch.tensor([0, 1, 5, 2])
        runs = []
        for seed in (3, 3, 4):
            s = NegativeSampler(8, 16, strategy, generator=torch.Generator().manual_seed(seed), **kw)
            runs.append(torch.cat([s.sample(corrupted).reshape(-1) for _ in range(5)]))
        assert torch.equal(runs[0], runs[1]), strategy
        assert not torch.equal(runs[0], runs[2]), strategy


def test_sampler_argument_errors():
    with pytest.raises(ValueError, match="uniform"):
        NegativeSampler(5, 2, "frequency")
    with pytest.raises(ValueError, match="entity types"):
        NegativeSampler(5, 2, "type")
