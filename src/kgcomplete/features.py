"""Feature packages, found by their folders: the core names no feature.

A feature is a subpackage of :mod:`kgcomplete` (e.g. ``seq2seq``, ``distributed``) or an installed
package that declares itself under the ``kgcomplete.features`` entry-point group. It plugs into the
core through light modules with fixed names, which the core imports on first need:

* ``<feature>/section.py`` registers a typed config section (:func:`kgcomplete.config.register_section`);
* ``<feature>/kind.py`` registers a run kind (:func:`kgcomplete.runs.register_run_kind`).

Adding a feature, a run kind or a config section therefore touches only the feature's own folder.
"""

from __future__ import annotations

import importlib
import logging
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path

log = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parent
#: the entry-point group through which a package outside kgcomplete declares itself a feature
ENTRY_POINT_GROUP = "kgcomplete.features"


@lru_cache(maxsize=None)
def feature_packages() -> tuple[str, ...]:
    """Dotted names of the feature packages: kgcomplete's subpackages (sorted), then entry points."""
    inner = sorted(f"kgcomplete.{p.name}" for p in _ROOT.iterdir() if (p / "__init__.py").is_file())
    outer = sorted(ep.value for ep in entry_points(group=ENTRY_POINT_GROUP))
    return tuple(dict.fromkeys(inner + outer))


def import_feature_modules(module: str) -> list[str]:
    """Import ``<feature>.<module>`` of every feature package that has one (``section`` or
    ``kind``); returns the imported names. A feature whose optional dependency is missing is
    skipped (its section or kind is then simply absent)."""
    done = []
    for pkg in feature_packages():
        name = f"{pkg}.{module}"
        if pkg.startswith("kgcomplete.") and not (_ROOT / pkg.split(".", 1)[1] / f"{module}.py").is_file():
            continue
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):  # the module itself is absent (an outside feature)
                continue
            log.warning("feature module %s is not available: %s", name, e)
            continue
        done.append(name)
    return done
