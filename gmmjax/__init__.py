"""gmmjax: differentiable, vectorized Gaussian mixture models in JAX."""

from . import datasets as datasets
from . import landscape as landscape
from ._density import component_log_prob as component_log_prob
from ._density import log_likelihood as log_likelihood
from ._density import log_prob as log_prob
from ._density import responsibilities as responsibilities
from ._density import sample as sample
from ._gmm import GMM as GMM
from ._information import diagnose as diagnose
from ._information import observed_information as observed_information
from ._information import standard_errors as standard_errors

__version__ = "0.1.0"
