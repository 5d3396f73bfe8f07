"""``python -m kgcomplete ...`` == ``kgc ...`` (also what ``torchrun -m kgcomplete`` runs)."""

from .cli.main import main

main()
