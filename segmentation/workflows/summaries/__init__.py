"""The terminal summaries every job prints: what a user reads after a run.

One module per area (``data``, ``identity``, ``segments``, ``scoring``, ``value``), the shared
lines in ``common``; the functions the jobs print are re-exported here
(``summaries.training(result, cfg)``).
Imports: the workflows' result types and the stages' plain values, never a Spark action.
"""

from segmentation.workflows.summaries.activation import audiences, campaign
from segmentation.workflows.summaries.common import (
    duplicates_line,
    input_lines,
    make_command,
)
from segmentation.workflows.summaries.data import features, generation, maintenance, promotion
from segmentation.workflows.summaries.identity import identity
from segmentation.workflows.summaries.scoring import assignment, rules
from segmentation.workflows.summaries.segments import attitudes, training
from segmentation.workflows.summaries.value import value

__all__ = [
    "assignment",
    "attitudes",
    "audiences",
    "campaign",
    "duplicates_line",
    "features",
    "generation",
    "identity",
    "input_lines",
    "maintenance",
    "make_command",
    "promotion",
    "rules",
    "training",
    "value",
]
