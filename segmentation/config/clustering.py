"""The clustering settings every segmentation shares: k selection and the final fit."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import model_validator

from segmentation.config.types import Algorithm, Float, Int, _require, _Section


class ClusteringConfig(_Section):
    """How a segmentation chooses k and fits it (``training.*``, ``attitudes.clustering.*``).

    ``KEY`` is the section's path in the YAML, so every message names the full key.
    """

    KEY: ClassVar[str] = "training"

    algorithm: Algorithm = "kmeans"
    k_min: Int = 2
    k_max: Int = 10
    seed: Int = 42
    max_iter: Int = 40
    n_init: Int = 3
    selection_sample_rows: Int = 20000
    min_segment_share: Float = 0.02
    silhouette_tolerance: Float = 0.03
    k: Int | None = None
    k_rule: Literal["balanced", "granular", "parsimony"] = "balanced"
    stable_jaccard: Float = 0.75
    selection_bootstrap_samples: Int = 10
    stability_rows: Int = 5000
    match_max_distance: Float = 1.0
    match_min_jaccard: Float = 0.5
    scaling: Literal["robust", "standard"] = "robust"
    clip: Float | None = 5.0
    near_constant_share: Float = 0.98

    @property
    def k_values(self) -> range:
        """The candidate k: ``k`` alone when pinned, else ``k_min`` to ``k_max``."""
        return (
            range(self.k, self.k + 1) if self.k is not None else range(self.k_min, self.k_max + 1)
        )

    @model_validator(mode="after")
    def _check_clustering(self) -> Self:
        key = self.KEY
        _require(self.k_min >= 2, f"{key}.k_min must be >= 2")
        _require(
            self.k_max >= self.k_min,
            f"{key}.k_max ({self.k_max}) must be >= k_min ({self.k_min})",
        )
        _require(self.max_iter >= 1, f"{key}.max_iter must be >= 1")
        _require(self.n_init >= 1, f"{key}.n_init must be >= 1")
        _require(self.selection_sample_rows >= 10, f"{key}.selection_sample_rows must be >= 10")
        _require(0 <= self.min_segment_share < 1, f"{key}.min_segment_share must be in [0, 1)")
        _require(self.silhouette_tolerance >= 0, f"{key}.silhouette_tolerance must be >= 0")
        _require(self.k is None or self.k >= 2, f"{key}.k must be >= 2 (or null)")
        _require(0 <= self.stable_jaccard <= 1, f"{key}.stable_jaccard must be in [0, 1]")
        _require(
            self.selection_bootstrap_samples >= 0,
            f"{key}.selection_bootstrap_samples must be >= 0",
        )
        _require(self.stability_rows >= 10, f"{key}.stability_rows must be >= 10")
        _require(self.match_max_distance >= 0, f"{key}.match_max_distance must be >= 0")
        _require(0 <= self.match_min_jaccard <= 1, f"{key}.match_min_jaccard must be in [0, 1]")
        _require(self.clip is None or self.clip > 0, f"{key}.clip must be > 0 (or null)")
        _require(
            0.5 < self.near_constant_share <= 1, f"{key}.near_constant_share must be in (0.5, 1]"
        )
        return self
