"""The optimizer's two ways to fail, each a one-line message for the operator.

``OptimizerError`` is bad input (a corrupt source, calibration data that does not fit the model,
an unwritable repository): nothing was published. ``GateRefused`` means the work was done but no
artifact kept accuracy within the limit: nothing was published either, and the message names each
format with both figures.
"""

from __future__ import annotations


class OptimizerError(Exception):
    """Bad input or environment; the message is one line, fit for stderr."""


class GateRefused(OptimizerError):
    """Every requested format lost more accuracy than allowed."""
