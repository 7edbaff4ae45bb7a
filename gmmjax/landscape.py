"""Exact gradients, Hessians and critical-point analysis of any scalar objective.

The objectives are **maximized** (log-likelihoods): ``"maximum"`` means a local
maximum of ``f`` and an escape direction points uphill. ``theta`` may be any pytree;
vectors and matrices come back flattened in ``jax.flatten_util.ravel_pytree`` order.

A singular Hessian is decided where possible by a fourth-order Lyapunov-Schmidt
reduction (see :mod:`gmmjax._landscape`): the null directions are followed along
curves ``theta + t u + t^2 w(u)`` whose correction ``w`` eliminates the curved
directions, so that the coupling of null and curved directions is accounted for.

Gauges: a function with an exact symmetry (such as the shift of all mixture logits)
has an exactly flat direction that every test here will see as null, to all orders
("degenerate"). Remove gauges by the choice of coordinates before calling; for
mixtures, :func:`gmmjax.observed_information`, :func:`gmmjax.standard_errors` and
:func:`gmmjax.diagnose` already work in the gauge-free natural parameter vector
(weights without the last, means, covariance entries).
"""

from ._critical import CriticalPoints as CriticalPoints
from ._critical import find_critical_points as find_critical_points
from ._landscape import CriticalPoint as CriticalPoint
from ._landscape import EscapeDirection as EscapeDirection
from ._landscape import classify as classify
from ._landscape import escape_direction as escape_direction
from ._landscape import gradient as gradient
from ._landscape import hessian as hessian

__all__ = [
    "CriticalPoint",
    "CriticalPoints",
    "EscapeDirection",
    "classify",
    "escape_direction",
    "find_critical_points",
    "gradient",
    "hessian",
]
