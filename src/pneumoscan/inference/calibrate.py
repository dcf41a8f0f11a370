"""Fit the competence gate and the per-population operating points for an existing checkpoint.

``pneumoscan calibrate --checkpoint best.pt --output gated.pt`` recomputes the patient-grouped train/validation split
the training used (from the checkpoint's own ``config``: data, seed, val/test fractions; or from the run folder's
``splits.csv`` when it sits beside the checkpoint or is given), then:

1. runs the model once over (a sample of) the training images and all validation images, keeping the penultimate
   features and the calibrated probabilities;
2. fits the gate on the training features and fixes its threshold on the validation features
   (:func:`pneumoscan.inference.gate.fit_gate`);
3. chooses a threshold per population on the validation images (:func:`pneumoscan.inference.populations.
   fit_populations`);
4. measures the gate on validation: chest X-rays wrongly refused per source, and the share caught of each kind of
   non-frontal-chest-X-ray image (:mod:`pneumoscan.inference.gate_probes`, made from validation X-rays);
5. writes the checkpoint with ``gate``, ``populations`` and ``default_population`` added; everything else (weights,
   temperature, threshold, operating points) is copied unchanged. The test split is never read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pneumoscan.data.records import Record, distinct_source_names, load_manifest
from pneumoscan.data.sources import load_records
from pneumoscan.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

#: Training images used to fit the gate (a random sample beyond this): the fit is stable well below it.
DEFAULT_MAX_TRAIN = 3000
#: Validation X-rays transformed into each probe kind (inverted, rotated, ...).
PROBE_XRAYS = 150
#: Training fits the gate by itself only with at least this many validation images (a quantile of fewer is noise).
MIN_AUTO_VAL = 50


def recompute_splits(state: dict[str, Any], *, data: Sequence[str] | None = None, seed: int | None = None,
                     val_fraction: float | None = None, splits_csv: str | Path | None = None,
                     data_options: dict[str, str] | None = None) -> tuple[dict[str, list[Record]], str]:
    """The train and validation records of the run that made ``state``, and how they were found.

    A ``splits.csv`` (written by training) is used as is. Otherwise the split is recomputed exactly as training does
    (:func:`pneumoscan.data.splits.make_splits`) from ``data`` / ``seed`` / ``val_fraction``, each defaulting to the
    value stored in the checkpoint's config.
    """
    from pneumoscan.data.splits import make_splits

    cfg = dict(state.get("config") or {})
    if splits_csv is not None:
        records = load_manifest(Path(splits_csv))
        by = {name: [r for r in records if r.split == name] for name in ("train", "val")}
        if not by["train"] or not by["val"]:
            raise DataError(f"{splits_csv}: needs rows with split 'train' and 'val'")
        _attach_extra(by, cfg)
        return by, f"splits from {splits_csv}"
    specs = list(data or cfg.get("data") or [])
    if not specs:
        raise ConfigError("the checkpoint records no training data: pass --data (and --seed, --val-fraction)")
    options = dict(data_options if data_options is not None else cfg.get("data_options") or {})
    seen: set[str] = set()
    records: list[Record] = []
    for spec in specs:
        records += distinct_source_names(load_records(spec, options), spec, seen)
    seed = int(cfg.get("seed", 0) if seed is None else seed)
    val_fraction = float(cfg.get("val_fraction", 0.15) if val_fraction is None else val_fraction)
    splits = make_splits(records, val_fraction=val_fraction, test_fraction=float(cfg.get("test_fraction", 0.15)),
                         seed=seed)
    if cfg.get("max_train_images") and len(splits["train"]) > int(cfg["max_train_images"]):
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.choice(len(splits["train"]), int(cfg["max_train_images"]), replace=False))
        splits["train"] = [splits["train"][i] for i in keep]
    return {"train": splits["train"], "val": splits["val"]}, (
        f"recomputed from {', '.join(specs)} (seed {seed}, val fraction {val_fraction})")


def sample_per_source(records: Sequence[Record], n: int, rng: np.random.Generator) -> list[Record]:
    """At most ``n`` records, each source as fully represented as its size allows (water-filling).

    Why: the gate learns what an in-scope X-ray looks like from these images. A plain random sample of a run whose
    training set is 90 % Kermany holds a handful of images of a small source (8 of Montgomery's 51 in 800), and the
    gate then refuses that hospital's films as unfamiliar — what happened to the Montgomery normals before this.
    Sources are filled smallest first with an equal share of what is left; a source smaller than its share gives
    all its images. The order of ``records`` is kept.
    """
    if len(records) <= n:
        return list(records)
    by_source: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_source.setdefault(r.source or "", []).append(i)
    keep: list[int] = []
    left = n
    ordered = sorted(by_source, key=lambda s: (len(by_source[s]), s))
    for k, source in enumerate(ordered):
        idx = by_source[source]
        quota = min(len(idx), left // (len(ordered) - k))
        left -= quota
        keep.extend(idx if quota == len(idx) else rng.choice(idx, quota, replace=False).tolist())
    return [records[i] for i in sorted(keep)]


def _attach_extra(by: dict[str, list[Record]], cfg: dict[str, Any]) -> None:
    """Give splits.csv records the manifest's further columns (view, age, ...), which it does not store.

    They decide the populations; read again from the training data specs recorded in the checkpoint, by path. A spec
    that no longer loads is skipped (its records then count only in the pooled population).
    """
    from dataclasses import replace

    extra: dict[str, dict[str, str]] = {}
    for spec in cfg.get("data") or []:
        try:
            for r in load_records(spec, dict(cfg.get("data_options") or {})):
                if r.extra:
                    extra[str(Path(r.path).resolve())] = r.extra
        except (DataError, ConfigError, OSError) as err:
            logger.warning("%s: could not re-read for its manifest columns (%s)", spec, err)
    if not extra:
        return
    for name, recs in by.items():
        by[name] = [replace(r, extra=extra.get(str(Path(r.path).resolve()), r.extra)) for r in recs]


def _prepared(predictor: Any, records: Sequence[Record]) -> np.ndarray:
    from pneumoscan.data.io import read_image

    out = []
    for r in records:
        out.append(predictor.prepare(read_image(r.path)))
    return np.stack(out)


def _scores(predictor: Any, prepared: np.ndarray, batch_size: int,
            progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    probs, feats = [], []
    for i in range(0, len(prepared), batch_size):
        p, f = predictor.scores_from_prepared(prepared[i:i + batch_size])
        if f is None:
            raise ConfigError("this model gives no features (an ONNX export without them): calibrate the .pt")
        probs.append(p)
        feats.append(f)
        if progress:
            progress(len(p))
    return np.concatenate(probs), np.concatenate(feats)


def gate_report(predictor: Any, val_prepared: np.ndarray, val_records: Sequence[Record],
                probe_xrays: Sequence[np.ndarray], *, batch_size: int = 64, seed: int = 0,
                extra_probes: dict[str, list[np.ndarray]] | None = None, val_features: np.ndarray | None = None,
                probe_features: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Chest X-rays refused per source, and non-chest-X-ray images caught per kind, with ``predictor``'s gate.

    Args:
        predictor: a :class:`~pneumoscan.inference.predictor.Predictor` carrying the gate to measure.
        val_prepared: uint8 prepared validation images (in-distribution chest X-rays).
        val_records: their records (for the per-source breakdown).
        probe_xrays: grey [0, 1] chest X-rays to transform into probes (validation images).
        extra_probes: further kinds (grey [0, 1] images by kind).
        val_features: the validation images' features, when already computed.
        probe_features: filled with each probe kind's features (for inspection), when given.
    """
    from pneumoscan.inference.gate_probes import probe_set

    size = predictor.info.preprocess.image_size
    refused = _refused(predictor, val_prepared, batch_size, val_features)
    by_source: dict[str, dict[str, Any]] = {}
    for src in sorted({r.source for r in val_records}):
        idx = np.array([r.source == src for r in val_records])
        by_source[src] = {"n": int(idx.sum()), "refused": int(refused[idx].sum()),
                          "refused_rate": float(refused[idx].mean())}
    kinds = probe_set(probe_xrays, size, seed=seed)
    kinds.update(extra_probes or {})
    caught: dict[str, dict[str, Any]] = {}
    for kind, images in kinds.items():
        if not images:
            continue
        kept: list[np.ndarray] = []
        flags = _refused(predictor, np.stack([predictor.prepare(im) for im in images]), batch_size, keep=kept)
        if probe_features is not None and kept:
            probe_features[kind] = np.concatenate(kept)
        caught[kind] = {"n": int(len(flags)), "caught": int(flags.sum()), "caught_rate": float(flags.mean())}
    return {"val_refused": {"n": int(len(refused)), "refused": int(refused.sum()),
                            "refused_rate": float(refused.mean()), "by_source": by_source},
            "probes_caught": caught}


def _refused(predictor: Any, prepared: np.ndarray, batch_size: int, features: np.ndarray | None = None,
             keep: list[np.ndarray] | None = None) -> np.ndarray:
    """Which prepared images the predictor's gate refuses (``features``: already computed, skips the network)."""
    flags = []
    for i in range(0, len(prepared), batch_size):
        chunk = prepared[i:i + batch_size]
        feats = features[i:i + batch_size] if features is not None else predictor.scores_from_prepared(chunk)[1]
        if keep is not None and feats is not None:
            keep.append(feats)
        flags += [not d.in_scope for d in predictor.gate.assess(chunk, feats)]
    return np.array(flags, dtype=bool)


def calibrate_checkpoint(checkpoint: str | Path, output: str | Path, *, data: Sequence[str] | None = None,
                         seed: int | None = None, val_fraction: float | None = None,
                         splits_csv: str | Path | None = None, data_options: dict[str, str] | None = None,
                         max_train: int = DEFAULT_MAX_TRAIN, quantile: float = 0.99, n_components: int = 64,
                         batch_size: int = 64, device: str = "auto", features_out: str | Path | None = None,
                         onnx: str | Path | None = None, probe_xrays: int = PROBE_XRAYS,
                         progress: Callable[[str, int], None] | None = None) -> dict[str, Any]:
    """Fit gate and populations for ``checkpoint`` and write the result to ``output``; returns the report.

    ``onnx``: an export of this same checkpoint (``pneumoscan export``, with the ``features`` output) to compute the
    features with ONNX Runtime instead of PyTorch — several times faster on CPUs; the export was verified to agree
    with PyTorch. Its recorded version must be this checkpoint's. ``probe_xrays``: validation X-rays made into each
    transformed probe kind.

    ``features_out`` (an ``.npz``) keeps the features computed on the way (train, val, each probe kind), to study the
    gate without running the network again.

    Raises:
        CheckpointError: unreadable checkpoint.
        DataError / ConfigError: the training data cannot be found or split.
    """
    from pneumoscan.data.io import read_image
    from pneumoscan.inference.gate import fit_gate
    from pneumoscan.inference.populations import fit_populations
    from pneumoscan.inference.predictor import Predictor, info_from_checkpoint
    from pneumoscan.models.checkpoint import load_checkpoint, save_checkpoint

    checkpoint, output = Path(checkpoint), Path(output)
    state = load_checkpoint(checkpoint)
    if splits_csv is None and data is None and (checkpoint.parent / "splits.csv").is_file():
        splits_csv = checkpoint.parent / "splits.csv"
    splits, how = recompute_splits(state, data=data, seed=seed, val_fraction=val_fraction, splits_csv=splits_csv,
                                   data_options=data_options)
    cfg_seed = int((state.get("config") or {}).get("seed", 0) if seed is None else seed)
    rng = np.random.default_rng(cfg_seed)
    train = splits["train"]
    train = sample_per_source(train, max_train, rng)
    val = splits["val"]
    logger.info("fitting the gate on %d training images, threshold on %d validation images (%s)", len(train),
                len(val), how)
    predictor = Predictor.from_checkpoint(checkpoint, device=device, precision="fp32")
    if onnx is not None:
        runner = Predictor.from_onnx(onnx)
        if runner.info.version != predictor.info.version:
            raise ConfigError(f"{onnx} is an export of {runner.info.version}, not of {checkpoint} "
                              f"({predictor.info.version})")
        predictor = Predictor(runner.backend, predictor.info, predictor.model)
    tick = (lambda stage: (lambda n: progress(stage, n))) if progress else (lambda stage: None)  # noqa: E731
    train_prep = _prepared(predictor, train)
    _, train_feats = _scores(predictor, train_prep, batch_size, tick("train"))
    val_prep = _prepared(predictor, val)
    val_probs, val_feats = _scores(predictor, val_prep, batch_size, tick("val"))
    gate = fit_gate(train_feats, val_feats, train_prepared=train_prep, val_prepared=val_prep,
                    n_components=n_components, quantile=quantile, seed=cfg_seed)
    cfg = dict(state.get("config") or {})
    populations, default = fit_populations(
        val, val_probs, rule=str(cfg.get("threshold_rule", "youden")),
        target_sensitivity=float(cfg.get("target_sensitivity", 0.95)),
        model_threshold=float(state.get("threshold", 0.5)),
        model_rule=str(state.get("threshold_rule", "fixed 0.5")))
    gate["fitted_on"]["splits"] = how
    # Measure with the new gate before writing it.
    state_new = {**state, "gate": gate, "populations": populations, "default_population": default}
    measured = Predictor(predictor.backend, info_from_checkpoint(state_new, version=predictor.info.version),
                         predictor.model)  # the same network (backend), with the new gate
    probe_idx = rng.choice(len(val), min(probe_xrays, len(val)), replace=False)
    probe_xrays = [read_image(val[i].path) for i in np.sort(probe_idx)]
    probe_feats: dict[str, np.ndarray] = {}
    report = gate_report(measured, val_prep, val, probe_xrays, batch_size=batch_size, seed=cfg_seed,
                         val_features=val_feats, probe_features=probe_feats)
    if features_out is not None:
        np.savez_compressed(features_out, train=train_feats, val=val_feats, val_probs=val_probs,
                            val_labels=np.array([r.label for r in val]),
                            **{f"probe_{k}": v for k, v in probe_feats.items()})
    gate["validation"] = {"val_refused_rate": report["val_refused"]["refused_rate"],
                          "val_refused_by_source": {k: v["refused_rate"]
                                                    for k, v in report["val_refused"]["by_source"].items()},
                          "probes_caught_rate": {k: v["caught_rate"] for k, v in report["probes_caught"].items()}}
    save_checkpoint(state_new, output)
    report.update({"checkpoint": str(checkpoint), "output": str(output), "splits": how,
                   "train_images": len(train), "val_images": len(val), "gate_threshold": gate["threshold"],
                   "gate_threshold_rule": gate["threshold_rule"], "populations": populations,
                   "default_population": default})
    return report
