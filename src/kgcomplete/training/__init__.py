"""Training: negative sampling, losses, optimizers and the training loop."""

from .loss import kvsall_loss, negative_sampling_loss, one_vs_all_loss
from .negative_sampler import NegativeSampler
from .optimizers import RowAdagrad, build_optimizer
from .trainer import Trainer

__all__ = ["NegativeSampler", "RowAdagrad", "Trainer", "build_optimizer", "kvsall_loss",
           "negative_sampling_loss", "one_vs_all_loss"]
