"""When a metric value is undefined and how summaries treat it; imports nothing, so ``candy evaluate --help`` can
quote it without loading numpy.

A value is undefined when it is not finite: a surface distance (HD95, ASSD) from a mask to an empty one is
infinite, and a metric may return NaN ("not scored", e.g. ``if_empty=float("nan")``). Summaries leave such values
out of means, standard deviations and medians, and count them with their reason instead.
"""
from __future__ import annotations

EMPTY_PREDICTION = "empty prediction"
EMPTY_REFERENCE = "empty reference"
BOTH_EMPTY = "both empty"
INFINITE = "infinite"
NOT_A_NUMBER = "NaN"
# Every reason, in the order summaries list them: which side lacks the class when the evaluator recorded it,
# else what the value is.
REASONS = (EMPTY_PREDICTION, EMPTY_REFERENCE, BOTH_EMPTY, INFINITE, NOT_A_NUMBER)
POLICY = (
    "Mean, std and median of a metric are taken over the cases where it is defined (finite); the other cases are "
    "counted as undefined, with the reason: a surface distance (hd95, assd) to an empty mask is infinite (empty "
    "prediction, empty reference). A class absent from both sides scores 1 for dice, iou and nsd and 0 for hd95 "
    "and assd."
)
