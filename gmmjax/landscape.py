"""Exact gradients, Hessians and critical-point analysis of any scalar objective.

The objectives are maximized (log-likelihoods): see :mod:`gmmjax._landscape` for the
conventions and the fourth-order test of degenerate critical points.
"""

from ._landscape import CriticalPoint as CriticalPoint
from ._landscape import CriticalPoints as CriticalPoints
from ._landscape import EscapeDirection as EscapeDirection
from ._landscape import classify as classify
from ._landscape import escape_direction as escape_direction
from ._landscape import find_critical_points as find_critical_points
from ._landscape import gradient as gradient
from ._landscape import hessian as hessian
