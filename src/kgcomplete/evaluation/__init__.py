"""Filtered ranking evaluation shared by every model family."""

from .evaluator import Evaluator, RankingResult, evaluate, metrics_from_ranks, rank_counts, realistic_rank
from .filter_index import CSRIndex, FilterIndex

__all__ = ["CSRIndex", "Evaluator", "FilterIndex", "RankingResult", "evaluate", "metrics_from_ranks",
           "rank_counts", "realistic_rank"]
