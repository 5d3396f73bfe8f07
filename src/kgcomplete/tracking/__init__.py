"""Experiment trackers (``--tracker tensorboard|mlflow|wandb``): a feature that follows KGE training
runs through the core's run observers (:mod:`kgcomplete.runs.observers`). ``section.py`` registers
the ``tracking`` config section and the observer factory; ``trackers.py`` (imported only when a
tracker is asked for) talks to TensorBoard, MLflow and Weights & Biases. See docs/tracking.md.
"""
