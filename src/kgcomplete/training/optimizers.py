"""Optimizers for embedding tables with sparse (row) gradients plus ordinary dense parameters."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RowAdagrad(torch.optim.Optimizer):
    """Row-wise Adagrad: one accumulator per table row (the mean of its squared gradient).

    State is ``(rows,)`` float32 instead of ``(rows, width)``; sparse gradients update only the rows
    in the batch. 1-D parameters keep one accumulator per element. Low-precision tables
    (``float16``/``bfloat16``) are updated in float32 on the touched rows and rounded back
    (``bfloat16``: stochastic rounding, so updates smaller than its precision still count on average).
    """

    def __init__(self, params, lr: float = 0.1, eps: float = 1e-10, initial_accumulator_value: float = 0.0):
        super().__init__(params, dict(lr=lr, eps=eps, init=initial_accumulator_value))

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none=set_to_none)
        for group in self.param_groups:
            for p in group["params"]:
                if getattr(p, "pending_row_grads", None):
                    p.pending_row_grads.clear()

    def load_state_dict(self, state_dict: dict) -> None:
        """As torch's, but the accumulators stay float32: torch casts floating state to its
        parameter's dtype, which would round a float16/bfloat16 table's row state on resume."""
        super().load_state_dict(state_dict)
        saved = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(saved, params):
            s = state_dict["state"].get(i)
            if s is not None and "sum" in s:
                self.state[p]["sum"] = s["sum"].to(device=p.device, dtype=torch.float32)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                pending = getattr(p, "pending_row_grads", None)
                if p.grad is None and not pending:
                    continue
                state = self.state[p]
                if "sum" not in state:
                    shape = p.shape[:1] if p.dim() > 1 else p.shape
                    state["sum"] = torch.full(shape, group["init"], dtype=torch.float32, device=p.device)
                acc = state["sum"]
                g = p.grad
                if pending:  # float32 row gradients of a low-precision table (models.base)
                    ids = torch.cat([i for i, _ in pending])
                    vals = torch.cat([v for _, v in pending])
                    pending.clear()
                    g = torch.sparse_coo_tensor(ids.unsqueeze(0), vals, (p.shape[0], vals.shape[1]), check_invariants=False)
                if g.is_sparse:
                    g = g.coalesce()
                    self._update_rows(p, acc, lr, eps, g.indices()[0], g.values())
                else:
                    sq = g.float().pow(2).mean(tuple(range(1, g.dim()))) if g.dim() > 1 else g.float().pow(2)
                    acc.add_(sq)
                    scale = lr / (acc.sqrt() + eps)
                    new = p.float() - g.float() * scale.view(-1, *([1] * (g.dim() - 1)))
                    p.copy_(round_to(new, p.dtype))
        return loss

    @torch.no_grad()
    def update_rows(self, p: Tensor, rows: Tensor, grad: Tensor) -> None:
        """Apply the gradient ``grad (U, W)`` (float32) of the distinct rows ``rows (U,)`` of table ``p``.

        Reads and writes only those rows of the table and of the accumulator, so concurrent calls
        from several threads on different batches (Hogwild) need no lock: a row that two threads
        touch at once keeps one of the two updates.
        """
        group = next(g for g in self.param_groups if any(q is p for q in g["params"]))
        state = self.state[p]
        if "sum" not in state:
            state["sum"] = torch.full(p.shape[:1], group["init"], dtype=torch.float32, device=p.device)
        self._update_rows(p, state["sum"], group["lr"], group["eps"], rows, grad)

    @staticmethod
    def _update_rows(p: Tensor, acc: Tensor, lr: float, eps: float, rows: Tensor, values: Tensor) -> None:
        """Row-wise Adagrad on distinct ``rows (U,)`` with gradients ``values (U, W)`` or ``(U,)``."""
        values = values.float()
        sq = values.pow(2).mean(1) if values.dim() > 1 else values.pow(2)
        a = acc.index_select(0, rows).add_(sq)
        acc.index_copy_(0, rows, a)
        scale = lr / a.sqrt_().add_(eps)
        step = values * (scale.unsqueeze(1) if values.dim() > 1 else scale)
        # rows are distinct: gather, update in float32, store (rounded for low-precision tables)
        p.index_copy_(0, rows, round_to(p.index_select(0, rows).float().sub_(step), p.dtype))


def round_to(x: Tensor, dtype: torch.dtype) -> Tensor:
    """float32 ``x`` in ``dtype``: round to nearest, stochastic rounding for bfloat16."""
    if dtype == torch.float32:
        return x
    if dtype != torch.bfloat16:
        return x.to(dtype)
    bits = x.contiguous().view(torch.int32)
    noise = torch.randint_like(bits, 0, 1 << 16)
    # adding uniform noise below the kept 16 bits, then truncating, rounds up with probability =
    # the dropped fraction (the conversion of a value with zero low bits is exact)
    return ((bits + noise) & -65536).view(torch.float32).to(torch.bfloat16)


class CombinedOptimizer:
    """Several optimizers stepped together (e.g. SparseAdam for tables + Adam for dense layers).

    Looks enough like one ``torch.optim.Optimizer`` for the trainer and LR schedulers.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers

    @property
    def param_groups(self):
        return [g for o in self.optimizers for g in o.param_groups]

    def _locate(self, p: Tensor) -> tuple[int, int]:
        """(index of the optimizer that updates ``p``, index of ``p`` in that optimizer's state dict)."""
        for i, o in enumerate(self.optimizers):
            params = [q for g in o.param_groups for q in g["params"]]  # torch numbers them in this order
            for j, q in enumerate(params):
                if q is p:
                    return i, j
        raise KeyError(f"no optimizer updates the parameter of shape {tuple(p.shape)}")

    def for_param(self, p: Tensor) -> torch.optim.Optimizer:
        """The optimizer that updates parameter ``p``."""
        return self.optimizers[self._locate(p)[0]]

    def update_rows(self, p: Tensor, rows: Tensor, grad: Tensor) -> None:
        """Apply the gradient ``grad (U, W)`` of the distinct rows ``rows (U,)`` of table ``p`` in place
        (:meth:`RowAdagrad.update_rows`; the row-gradient step, training/row_gradients.py)."""
        opt = self.for_param(p)
        if not isinstance(opt, RowAdagrad):
            raise TypeError(f"row updates need optimizer rowadagrad, not {type(opt).__name__}")
        opt.update_rows(p, rows, grad)

    def state_key(self, p: Tensor) -> str:
        """Prefix of ``p``'s state tensors among :func:`optimizer_state_tensors`' keys (e.g. the
        entity table's Adagrad accumulator is ``state_key(table) + "sum"``)."""
        i, j = self._locate(p)
        return state_path("optimizers", i, "state", j) + "/"

    def zero_grad(self, set_to_none: bool = True):
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self):
        for o in self.optimizers:
            o.step()

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for o, s in zip(self.optimizers, state["optimizers"]):
            kernels = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in o.param_groups]
            o.load_state_dict(s)
            for g, k in zip(o.param_groups, kernels):  # this process's choice (device, gradients), not the saver's
                g.update(k)


def build_optimizer(name: str, model: nn.Module, lr: float) -> CombinedOptimizer:
    """``adagrad`` (element-wise, sparse-aware), ``rowadagrad``, ``adam`` (SparseAdam for sparse
    tables + Adam for the rest) or ``sgd``."""
    sparse = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in sparse_ids and p.requires_grad]
    name = name.lower()
    low = [p for p in sparse + dense if p.dtype in (torch.float16, torch.bfloat16)]
    if low and name != "rowadagrad":
        raise ValueError(f"a {low[0].dtype} embedding table (model.storage_dtype) needs optimizer rowadagrad "
                         f"(float32 row state, float32 updates), not {name!r}")
    opts: list[torch.optim.Optimizer] = []
    if name == "adagrad":
        params = sparse + dense
        # dense gradients on the CPU (model.dense_gradients: 1vsAll, KvsAll): the fused kernel, one
        # pass over each table without temporaries (about 6x faster than the per-tensor loop)
        fused = getattr(model, "dense_gradients", False) and all(p.device.type == "cpu" for p in params)
        opts.append(torch.optim.Adagrad(params, lr=lr, fused=True) if fused else torch.optim.Adagrad(params, lr=lr))
    elif name == "rowadagrad":
        opts.append(RowAdagrad(sparse + dense, lr=lr))
    elif name == "adam":
        if sparse:
            opts.append(torch.optim.SparseAdam(sparse, lr=lr))
        if dense:
            opts.append(torch.optim.Adam(dense, lr=lr))
    elif name == "sgd":
        opts.append(torch.optim.SGD(sparse + dense, lr=lr))
    else:
        raise ValueError(f"unknown optimizer {name!r}: adagrad | rowadagrad | adam | sgd")
    return CombinedOptimizer(opts)


def state_path(*parts) -> str:
    """The flat key of a tensor at ``parts`` (dict keys, list indices) of a nested state dict."""
    return "/".join(str(p) for p in parts)


def optimizer_state_tensors(opt: CombinedOptimizer) -> tuple[dict[str, Tensor], dict]:
    """Split an optimizer state into flat tensors (for safetensors) and a JSON-able skeleton."""
    tensors: dict[str, Tensor] = {}

    def walk(obj, path):
        if isinstance(obj, Tensor):
            key = state_path(*path)
            tensors[key] = obj.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(obj, dict):
            return {"__dict__": [[k if isinstance(k, str) else int(k), walk(v, path + [str(k)])] for k, v in obj.items()]}
        if isinstance(obj, (list, tuple)):
            return [walk(v, path + [str(i)]) for i, v in enumerate(obj)]
        return obj

    return tensors, walk(opt.state_dict(), [])


def optimizer_state_from_tensors(tensors: dict[str, Tensor], skeleton) -> dict:
    def build(obj):
        if isinstance(obj, dict):
            if "__tensor__" in obj:
                return tensors[obj["__tensor__"]]
            return {k: build(v) for k, v in obj["__dict__"]}
        if isinstance(obj, list):
            return [build(v) for v in obj]
        return obj

    return build(skeleton)
