"""Hyperparameter search (``pneumoscan tune``): an Optuna study over the training configuration, scored on the
patient-grouped validation split only. See :mod:`pneumoscan.tuning.study`.

Nothing is imported here, so that importing the package costs nothing and Optuna stays optional.
"""

from __future__ import annotations
