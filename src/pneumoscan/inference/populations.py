"""Operating points per population: a threshold for each population a model was validated on.

A threshold chosen on pooled validation images is a compromise between populations whose probabilities sit at
different levels (children and adults, PA and AP films). So, where the validation split has enough of a population,
its own threshold is chosen on its own validation images, by the model's threshold rule (Youden's J by default), and
the caller picks the population the image belongs to (``--population``). Which population an image belongs to is
read from the data, in this order (:func:`population_of`):

1. a ``population`` column in the manifest;
2. an ``age`` column: under 18 is ``pediatric``; 18 and over is ``adult_pa`` / ``adult_ap`` by the ``view`` column
   (``adult`` when the view is unknown or another);
3. the Kermany et al. (2018) set (source ``kermany``, or a folder named ``kermany*``), which is pediatric (children
   aged one to five, Guangzhou Women and Children's Medical Center);
4. adult sources with a ``view`` column (``adult_pa`` / ``adult_ap``).

Images that match none count only in the pooled ``all``. A population with fewer than :data:`MIN_IMAGES` validation
images, or fewer than :data:`MIN_PER_CLASS` of either class, is listed with ``threshold: null`` and a ``note`` saying
why: it gets no threshold of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscan.data.records import Record
from pneumoscan.errors import ConfigError

MIN_IMAGES = 50
MIN_PER_CLASS = 10
#: Name of the pooled population (every validation image), whose threshold is the model's own.
POOLED = "all"

DEFINITIONS: dict[str, str] = {
    "pediatric": "children: manifest age < 18, or the Kermany et al. 2018 pediatric set (source/folder 'kermany')",
    "adult_pa": "adults (manifest age >= 18, or an adult source) with view PA",
    "adult_ap": "adults (manifest age >= 18, or an adult source) with view AP",
    "adult": "adults with no PA/AP view recorded",
    POOLED: "every validation image (the model's own threshold)",
}


def population_of(record: Record) -> str | None:
    """The population a record belongs to (see the module docstring), or None."""
    extra = {k.lower(): v for k, v in (record.extra or {}).items()}
    if extra.get("population"):
        return extra["population"].strip()
    view = (extra.get("view") or "").strip().upper()
    adult_name = {"PA": "adult_pa", "AP": "adult_ap"}.get(view, "adult")
    age = _number(extra.get("age"))
    if age is not None:
        return "pediatric" if age < 18 else adult_name
    if record.source.lower().startswith("kermany") or any(part.lower().startswith("kermany")
                                                         for part in Path(record.path).parts[:-1]):
        return "pediatric"
    if view in ("PA", "AP"):
        return adult_name
    return None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def fit_populations(records: Sequence[Record], probs: np.ndarray, *, rule: str, target_sensitivity: float,
                    model_threshold: float, model_rule: str) -> tuple[dict[str, dict[str, Any]], str]:
    """Per-population thresholds on validation, and the default population.

    Args:
        records: the validation records.
        probs: their calibrated probabilities (the model's temperature applied).
        rule: the model's threshold rule (``youden``, ``max_f1``, ``sensitivity``).
        target_sensitivity: for the ``sensitivity`` rule.
        model_threshold: the model's own (pooled) threshold.
        model_rule: its description.

    Returns:
        ``(populations, default)``. When one population holds every validation image, its threshold is the model's
        own (same images, same rule) and it is the default; otherwise ``all`` (the model's threshold) is added and is
        the default, beside each population's own.
    """
    from pneumoscan.evaluation.thresholds import operating_points, sensitivity_key

    key = sensitivity_key(target_sensitivity) if rule == "sensitivity" else rule
    labels = np.array([r.label for r in records], dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    names = [population_of(r) for r in records]
    found = sorted({n for n in names if n is not None})
    out: dict[str, dict[str, Any]] = {}
    for name in found:
        idx = np.array([n == name for n in names])
        n, n_pos = int(idx.sum()), int(labels[idx].sum())
        entry: dict[str, Any] = {"threshold": None, "rule": None, "n_val": n, "n_pos": n_pos,
                                 "definition": DEFINITIONS.get(name, "manifest column 'population'")}
        if n == len(records):
            entry.update(threshold=float(model_threshold), rule=model_rule)
        elif n < MIN_IMAGES or min(n_pos, n - n_pos) < MIN_PER_CLASS:
            entry["note"] = (f"no threshold of its own: {n} validation images ({n_pos} PNEUMONIA); at least "
                             f"{MIN_IMAGES}, with {MIN_PER_CLASS} of each class, are needed. Use '{POOLED}'.")
        else:
            points = operating_points(labels[idx], probs[idx], target_sensitivity=target_sensitivity)
            entry.update(threshold=float(points[key]), rule=f"{key} on this population's validation images ({n})")
        out[name] = entry
    if len(found) == 1 and out[found[0]]["n_val"] == len(records):
        return out, found[0]
    out[POOLED] = {"threshold": float(model_threshold), "rule": model_rule, "n_val": len(records),
                   "n_pos": int(labels.sum()), "definition": DEFINITIONS[POOLED]}
    return out, POOLED


def default_populations(threshold: float, rule: str) -> tuple[dict[str, dict[str, Any]], str]:
    """What a checkpoint without per-population thresholds has: the pooled ``all`` with the model's threshold."""
    return {POOLED: {"threshold": float(threshold), "rule": rule, "n_val": None, "n_pos": None,
                     "definition": "the model's own threshold (this model records no populations)"}}, POOLED


def resolve(populations: Mapping[str, Mapping[str, Any]], name: str) -> float:
    """The threshold of population ``name``.

    Raises:
        ConfigError: unknown population, or one without a threshold of its own.
    """
    if name not in populations:
        raise ConfigError(f"unknown population '{name}'; this model has: {', '.join(populations) or 'none'}")
    threshold = populations[name].get("threshold")
    if threshold is None:
        raise ConfigError(f"population '{name}' has no threshold of its own: "
                          f"{populations[name].get('note', 'too few validation images')}")
    return float(threshold)
