"""What a deployed model is (:class:`ModelInfo`), shared by the :class:`~pneumoscan.inference.predictor.Predictor`
and both backends: the PyTorch checkpoint reader and :mod:`pneumoscan.inference.onnx_backend` each build one.

Torch-free, so the ONNX backend imports it without importing the predictor (which lazily imports the backend).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pneumoscan.data.preprocess import PreprocessConfig
from pneumoscan.errors import CheckpointError


@dataclass(frozen=True)
class ModelInfo:
    """What a deployed model is, as stored with its weights.

    ``threshold`` is the model's own (pooled validation) threshold; ``populations`` maps each population the model
    was validated on to its operating point (``{name: {threshold, rule, n_val, n_pos, definition[, note]}}``, see
    :mod:`pneumoscan.inference.populations`) and ``default_population`` names the one applied when the caller names
    none. ``gate`` holds the fitted competence-gate parameters (:mod:`pneumoscan.inference.gate`), or None.
    """

    name: str
    version: str
    preprocess: PreprocessConfig
    threshold: float
    threshold_rule: str
    temperature: float = 1.0
    class_names: tuple[str, ...] = ("NORMAL", "PNEUMONIA")
    operating_points: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    backend: str = "torch"
    populations: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_population: str = ""
    gate: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.populations:  # a model that records none: the pooled population, at the model's threshold
            from pneumoscan.inference.populations import default_populations

            pops, default = default_populations(self.threshold, self.threshold_rule)
            object.__setattr__(self, "populations", pops)
            object.__setattr__(self, "default_population", default)
        elif self.default_population not in self.populations:
            raise CheckpointError(f"default population '{self.default_population}' is not among the model's "
                                  f"populations ({', '.join(self.populations)})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly description; the gate appears as its summary (limits, threshold), not its arrays."""
        from pneumoscan.inference.gate import CompetenceGate

        out = {k: v for k, v in asdict(replace(self, gate=None)).items()}
        out["preprocess"] = self.preprocess.to_dict()
        out["image_size"] = self.preprocess.image_size
        out["gate"] = CompetenceGate(self.gate).describe()
        return out
