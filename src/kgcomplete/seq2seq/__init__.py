"""KGT5: sequence-to-sequence knowledge graph completion and question answering (needs the ``kgt5`` extra).

Modules: :mod:`.verbalize` (unique entity texts), :mod:`.tokenizer`, :mod:`.encoding`, :mod:`.model`
(T5 presets), :mod:`.trie`, :mod:`.decoding` (greedy / sampling / beam / constrained beam, the
ranking scorer), :mod:`.train`, :mod:`.run` (``train_kgt5``, ``KGT5Run``), :mod:`.ensemble`, :mod:`.qa`.
Heavy dependencies (transformers, accelerate) are imported lazily.
"""

#: the ensemble rules of :mod:`.ensemble` (the first is the default); here, without imports, for the CLI's options
ENSEMBLE_RULES = ("product", "paper")
