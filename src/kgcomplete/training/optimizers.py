"""Optimizers for embedding tables with sparse (row) gradients plus ordinary dense parameters."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RowAdagrad(torch.optim.Optimizer):
    """Row-wise Adagrad: one accumulator per table row (the mean of its squared gradient).

    State is ``(rows,)`` instead of ``(rows, width)``; sparse gradients update only the rows in the
    batch. 1-D parameters keep one accumulator per element.
    """

    def __init__(self, params, lr: float = 0.1, eps: float = 1e-10, initial_accumulator_value: float = 0.0):
        super().__init__(params, dict(lr=lr, eps=eps, init=initial_accumulator_value))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "sum" not in state:
                    shape = p.shape[:1] if p.dim() > 1 else p.shape
                    state["sum"] = torch.full(shape, group["init"], dtype=torch.float32, device=p.device)
                acc = state["sum"]
                g = p.grad
                if g.is_sparse:
                    g = g.coalesce()
                    rows, values = g.indices()[0], g.values()
                    sq = values.float().pow(2).mean(1) if values.dim() > 1 else values.float().pow(2)
                    acc.index_add_(0, rows, sq)
                    scale = (lr / (acc[rows].sqrt() + eps)).to(p.dtype)
                    p.index_add_(0, rows, -values * (scale.unsqueeze(1) if values.dim() > 1 else scale))
                else:
                    sq = g.float().pow(2).mean(tuple(range(1, g.dim()))) if g.dim() > 1 else g.float().pow(2)
                    acc.add_(sq)
                    scale = (lr / (acc.sqrt() + eps)).to(p.dtype)
                    p.add_(-g * scale.view(-1, *([1] * (g.dim() - 1))))
        return loss


class CombinedOptimizer:
    """Several optimizers stepped together (e.g. SparseAdam for tables + Adam for dense layers).

    Looks enough like one ``torch.optim.Optimizer`` for the trainer and LR schedulers.
    """

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers

    @property
    def param_groups(self):
        return [g for o in self.optimizers for g in o.param_groups]

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
            o.load_state_dict(s)


def build_optimizer(name: str, model: nn.Module, lr: float) -> CombinedOptimizer:
    """``adagrad`` (element-wise, sparse-aware), ``rowadagrad``, ``adam`` (SparseAdam for sparse
    tables + Adam for the rest) or ``sgd``."""
    sparse = [m.weight for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse]
    sparse_ids = {id(p) for p in sparse}
    dense = [p for p in model.parameters() if id(p) not in sparse_ids and p.requires_grad]
    name = name.lower()
    opts: list[torch.optim.Optimizer] = []
    if name == "adagrad":
        opts.append(torch.optim.Adagrad(sparse + dense, lr=lr))
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


def optimizer_state_tensors(opt: CombinedOptimizer) -> tuple[dict[str, Tensor], dict]:
    """Split an optimizer state into flat tensors (for safetensors) and a JSON-able skeleton."""
    tensors: dict[str, Tensor] = {}

    def walk(obj, path):
        if isinstance(obj, Tensor):
            key = "/".join(path)
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
