"""The ``distributed`` config section (:class:`DistConfig`, see docs/distributed.md).

Light on purpose (the core config finds and imports it, :mod:`kgcomplete.features`):
no torch; the choices that need the BESS modules are checked in :meth:`DistConfig.from_config`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Optional

from ..config import NON_NEGATIVE, POSITIVE, POSITIVE_INT, Limit, register_section

if TYPE_CHECKING:
    from ..config import Config

#: shard rows scored at once in inference (``distributed.window``)
DEFAULT_WINDOW = 1 << 16


@dataclass
class DistConfig:
    """The ``distributed`` section with defaults (``cfg.distributed``; see docs/distributed.md)."""

    workers: int = 1
    backend: str = "auto"  #: auto | gloo | nccl
    device: str = "auto"  #: auto (cuda:LOCAL_RANK when available) | cpu | cuda
    exchange: str = "embeddings"  #: embeddings | scores | allgather
    batch_sampler: str = "rigid"  #: rigid | random (with replacement)
    positives_per_block: int = 0  #: P; 0 = max(1, training.batch_size // workers**2)
    negatives_per_shard: int = 0  #: k; 0 = max(1, training.num_negatives // workers)
    sharding_seed: Optional[int] = None  #: None = training.seed
    master_addr: str = "127.0.0.1"
    master_port: int = 0  #: 0 = a free port (local launch)
    timeout_s: float = 600.0  #: collectives fail instead of hanging after this long
    window: int = DEFAULT_WINDOW  #: shard rows scored at once in inference
    threads: int = 0  #: torch threads per worker (0 = cores // workers)
    start_method: str = "spawn"  #: local launch: spawn | fork (faster start, e.g. in tests)

    LIMITS: ClassVar[dict[str, Limit]] = {
        "workers": POSITIVE_INT, "positives_per_block": NON_NEGATIVE, "negatives_per_shard": NON_NEGATIVE,
        "master_port": Limit(0, 65535), "timeout_s": POSITIVE, "window": POSITIVE_INT, "threads": NON_NEGATIVE,
    }

    @classmethod
    def from_config(cls, cfg: "Config") -> "DistConfig":
        """A copy of ``cfg``'s ``distributed`` section, its choices checked."""
        from .exchange import EXCHANGES

        out = dataclasses.replace(cfg.section("distributed"))
        if out.device == "auto" and str(cfg.training.device or "auto") != "auto":  # --device for every worker
            out.device = cfg.training.device
        if out.exchange not in EXCHANGES:
            raise ValueError(f"distributed.exchange={out.exchange!r}: expected one of {', '.join(EXCHANGES)}")
        return out

    def sizes(self, cfg: "Config", n: int) -> tuple[int, int]:
        """(positives per block P, negatives per shard k)."""
        P = self.positives_per_block or max(1, cfg.training.batch_size // (n * n))
        k = self.negatives_per_shard or max(1, cfg.training.num_negatives // n)
        return P, k


register_section("distributed", DistConfig)

__all__ = ["DEFAULT_WINDOW", "DistConfig"]
