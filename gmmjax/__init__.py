"""gmmjax: differentiable, vectorized Gaussian mixture models in JAX."""

from . import datasets as datasets
from ._density import component_log_prob as component_log_prob
from ._density import log_likelihood as log_likelihood
from ._density import log_prob as log_prob
from ._density import responsibilities as responsibilities
from ._density import sample as sample
from ._gmm import GMM as GMM

__version__ = "0.1.0"
