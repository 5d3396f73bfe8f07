"""What a training run tells the person watching it, on stderr: a start banner, one line per
validation that stays, why training stopped, where an interrupted run was saved and how to go on.

:class:`Console` is silent when disabled (``training.progress: false``). Progress bars are drawn
only when stderr is a terminal (:func:`bars_wanted`); the lines are written either way, so a log
file gets the validations without bar debris. Inside an epoch, :class:`EpochProgress` draws the bar
on a terminal and writes a line every :data:`PROGRESS_LINE_EVERY_S` seconds elsewhere (a log file
of a long epoch is not silent for minutes).
"""

from __future__ import annotations

import shlex
import sys
import time
from typing import Callable, Optional, TextIO

#: seconds between the progress lines of an epoch when no bar is drawn (stderr is not a terminal)
PROGRESS_LINE_EVERY_S = 60.0


def bars_wanted(progress: bool, stream: Optional[TextIO] = None) -> bool:
    """Draw progress bars: asked for and stderr (or ``stream``) is a terminal."""
    stream = stream or sys.stderr
    return bool(progress) and hasattr(stream, "isatty") and stream.isatty()


class EpochProgress:
    """Where an epoch of ``total`` steps is: a tqdm bar when :func:`bars_wanted`; otherwise, while
    ``progress`` is on, one line every ``every_s`` seconds (steps done, share, the figures of
    ``postfix``, the time left in the epoch at the rate so far); nothing when ``progress`` is off.
    ``initial``: steps already done (a resumed epoch)."""

    def __init__(self, progress: bool, total: int, desc: str, unit: str = "batch", initial: int = 0,
                 every_s: Optional[float] = None, stream: Optional[TextIO] = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.total, self.desc, self.unit, self.done = int(total), desc, unit, int(initial)
        self.stream, self.clock, self.bar, self.lines = stream, clock, None, False
        if not progress:
            return
        if bars_wanted(progress, stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.done, desc=desc, unit=unit, leave=False, file=stream)
        else:
            self.lines = True
            self.every_s = PROGRESS_LINE_EVERY_S if every_s is None else every_s
            self.start, self.start_done = clock(), self.done
            self.last = self.start

    def update(self, n: int = 1, postfix: Optional[Callable[[], dict]] = None) -> None:
        """``n`` more steps done; ``postfix()`` gives the figures to show (called only when shown)."""
        self.done += n
        if self.bar is not None:
            if postfix is not None:  # drawn at the bar's own refresh rate
                self.bar.set_postfix(postfix(), refresh=False)
            self.bar.update(n)
        elif self.lines and (now := self.clock()) - self.last >= self.every_s:
            self.last = now
            rate = (self.done - self.start_done) / max(now - self.start, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            figures = "".join(f"  {k} {v}" for k, v in (postfix() if postfix is not None else {}).items())
            share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
            print(f"{self.desc}: {self.done:,}/{self.total:,} {plural_word(self.done, self.unit)}{share}{figures}"
                  f"  about {_duration(left)} left in this epoch", file=self.stream or sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.lines = False


def _duration(seconds: float) -> str:
    if seconds == float("inf"):  # no step finished since the epoch started
        return "an unknown time"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def plural_word(n: int, word: str) -> str:
    return word + ("" if n == 1 else ("es" if word.endswith(("s", "ch", "sh", "x")) else "s"))


def plural(n: int, word: str) -> str:
    return f"{n:,} {plural_word(n, word)}"


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


__all__ = ["Console", "EpochProgress", "PROGRESS_LINE_EVERY_S", "bars_wanted", "plural"]
