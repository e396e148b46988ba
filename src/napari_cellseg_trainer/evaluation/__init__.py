"""Instance labels from probability maps, and scores of a prediction against ground truth.

Pure numpy / scipy / scikit-image: no torch, Qt or napari, so the CLI, the panels and scripts
share it.
"""

from .instances import (
    InstanceError,
    InstanceParams,
    connected_components,
    default_params,
    label_instances,
)
from .matching import EvaluationError, InstanceScores, match_instances
from .scores import (
    ERROR_CORRECT,
    ERROR_FALSE_NEGATIVE,
    ERROR_FALSE_POSITIVE,
    Evaluation,
    as_binary,
    error_map,
    evaluate,
    kind_of,
    semantic_scores,
)

__all__ = [
    "ERROR_CORRECT",
    "ERROR_FALSE_NEGATIVE",
    "ERROR_FALSE_POSITIVE",
    "Evaluation",
    "EvaluationError",
    "InstanceError",
    "InstanceParams",
    "InstanceScores",
    "as_binary",
    "connected_components",
    "default_params",
    "error_map",
    "evaluate",
    "kind_of",
    "label_instances",
    "match_instances",
    "semantic_scores",
]
