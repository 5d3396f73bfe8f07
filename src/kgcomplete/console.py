"""What a training run tells the person watching it, on stderr: a start banner, one line per
validation that stays, why training stopped, where an interrupted run was saved and how to go on.

:class:`Console` is silent when disabled (``training.progress: false``). Progress bars are drawn
only when stderr is a terminal (:func:`bars_wanted`); the lines are written either way, so a log
file gets the validations without bar debris.
"""

from __future__ import annotations

import shlex
import sys
from typing import Optional, TextIO


def bars_wanted(progress: bool, stream: Optional[TextIO] = None) -> bool:
    """Draw progress bars: asked for and stderr (or ``stream``) is a terminal."""
    stream = stream or sys.stderr
    return bool(progress) and hasattr(stream, "isatty") and stream.isatty()


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


class Console:
    """Lines about one training run (``folder``: its run folder, named in the messages)."""

    def __init__(self, enabled: bool, folder=None, stream: Optional[TextIO] = None):
        self.enabled, self.folder = enabled, folder
        self.stream = stream

    def say(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream or sys.stderr, flush=True)

    def validation(self, record: dict, best_mrr: float, best_epoch: int) -> None:
        """One line per validated epoch: epoch, loss, valid MRR, best so far, time."""
        if "valid_mrr" not in record:
            return
        mark = " *" if best_epoch == record["epoch"] else ""
        self.say(f"epoch {record['epoch']:>4}  loss {record['loss']:.4f}  valid MRR {record['valid_mrr']:.4f}  "
                 f"best {best_mrr:.4f} (epoch {best_epoch}){mark}  {record['time_s']:.1f}s train "
                 f"+ {record.get('valid_time_s', 0):.1f}s valid")

    def stopped(self, reason: str, epoch: int, best_epoch: int, best_mrr: float) -> None:
        """Why training stopped and which weights the run keeps."""
        keeps = ""
        if best_epoch and best_epoch != epoch:
            keeps = f"; the run keeps the weights of epoch {best_epoch}"
            if f"at epoch {best_epoch}" not in reason:
                keeps += f" (valid MRR {best_mrr:.4f})"
        self.say(f"stopped at epoch {epoch}: {reason}{keeps}")

    def nothing_to_train(self, epoch: int, patience: int, bad: int) -> None:
        self.say(f"nothing to train: the run stopped early at epoch {epoch} (no better validation MRR in "
                 f"{plural(bad, 'validation')}, patience {patience}); to train on, resume with a larger "
                 f"--patience (0 = never stop early)")

    def interrupted(self, epoch: int, rows: int = 0, saved: bool = True) -> None:
        where = f" to {self.folder}" if self.folder else ""
        what = f"epoch {epoch}" + (f" + {rows:,} rows of epoch {epoch + 1}" if rows else "")
        resume = f"; continue with `kgc train --resume {shlex.quote(str(self.folder))}`" if self.folder else ""
        if saved:
            self.say(f"interrupted: saved {what}{where}{resume}")
        else:
            self.say(f"interrupted: not saved; the last checkpoint{where} is kept{resume}")


__all__ = ["Console", "bars_wanted", "plural"]
