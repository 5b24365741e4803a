"""Runtime selection: the channel model, payload/time predictors, and the split +
knob search (single shot: SLICER Eq. 3 + SLICER-SEARCH; autoregressive: SLICER
Eq. 5-6 with the early exit of Sung et al., Algorithm 2)."""

from slicer_compile.select.autoregressive import ARDecision, ARTable, select_autoregressive
from slicer_compile.select.selector import Conditions, Decision, LatencyBreakdown, Selector

__all__ = ["ARDecision", "ARTable", "Conditions", "Decision", "LatencyBreakdown", "Selector", "select_autoregressive"]
