import numpy as np

import gmmjax


def test_faithful():
    x = gmmjax.datasets.faithful()
    assert x.shape == (272, 2) and x.dtype == np.float64
    np.testing.assert_allclose(x[0], [3.6, 79.0])
    assert 1.5 < x[:, 0].min() < x[:, 0].max() < 5.2
