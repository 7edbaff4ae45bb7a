"""gmmjax: differentiable, vectorized Gaussian mixture models in JAX.

The public names below are imported on first use (PEP 562), so that
``gmmjax --help`` and the command's argument errors answer without loading JAX.
The imports under ``TYPE_CHECKING`` are the one list of what the package exports:
type checkers, IDEs and the documentation read them as written, and
``__getattr__`` resolves each name from them.
"""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from . import datasets as datasets
    from . import io as io
    from . import landscape as landscape
    from . import toy as toy
    from ._anneal import Annealed as Annealed
    from ._anneal import AnnealedState as AnnealedState
    from ._anneal import AnnealInfo as AnnealInfo
    from ._anneal import anneal_variance as anneal_variance
    from ._cache import enable_compilation_cache as enable_compilation_cache
    from ._density import component_log_prob as component_log_prob
    from ._density import log_likelihood as log_likelihood
    from ._density import log_prob as log_prob
    from ._density import responsibilities as responsibilities
    from ._density import sample as sample
    from ._em import EM as EM
    from ._em import EMState as EMState
    from ._em import e_step as e_step
    from ._em import em_step as em_step
    from ._em import m_step as m_step
    from ._em import relative_reg_covar as relative_reg_covar
    from ._escape import escape_saddle as escape_saddle
    from ._fit import FitResult as FitResult
    from ._fit import FitTrace as FitTrace
    from ._fit import Status as Status
    from ._fit import StepInfo as StepInfo
    from ._fit import fit as fit
    from ._fit import fit_trace as fit_trace
    from ._gmm import GMM as GMM
    from ._gradient import GradientFitter as GradientFitter
    from ._gradient import GradientState as GradientState
    from ._gradient import noisy as noisy
    from ._information import diagnose as diagnose
    from ._information import observed_information as observed_information
    from ._information import standard_errors as standard_errors
    from ._init import ResponsibilityStart as ResponsibilityStart
    from ._init import init_gmm as init_gmm
    from ._multistart import best_of as best_of
    from ._multistart import multistart as multistart
    from ._prior import Prior as Prior
    from ._prior import log_prior as log_prior
    from ._selection import SelectionResult as SelectionResult
    from ._selection import aic as aic
    from ._selection import bic as bic
    from ._selection import n_parameters as n_parameters
    from ._selection import select as select
    from ._sharding import device_mesh as device_mesh
    from ._sharding import shard as shard
    from ._sharding import shard_padded as shard_padded
    from ._sharding import shard_restarts as shard_restarts
    from ._streaming import OnlineEM as OnlineEM
    from ._streaming import OnlineEMInfo as OnlineEMInfo
    from ._streaming import OnlineEMState as OnlineEMState
    from ._streaming import fit_em_chunked as fit_em_chunked
    from ._vb import VB as VB
    from ._vb import VariationalPrior as VariationalPrior
    from ._vb import VBState as VBState


def _exports() -> dict[str, str]:
    """``{public name: module}`` from the ``TYPE_CHECKING`` imports of this file."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    block = next(node for node in tree.body if isinstance(node, ast.If))
    return {
        alias.asname or alias.name: "." + (node.module or alias.name)
        for node in block.body
        for alias in node.names
    }


_EXPORTS = _exports()
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gmmjax' has no attribute {name!r}")
    import importlib

    value = importlib.import_module(module, __name__)
    if module != "." + name:
        value = getattr(value, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
