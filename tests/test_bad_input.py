"""Every bad input at the API edge raises ValueError/TypeError naming the problem.

One table of bad arguments per entry point; each row is (keyword overrides,
exception type, regex the message must match). The regexes name the argument and
what was expected, so a generic error from deep inside JAX or NumPy fails them.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gmmjax
from gmmjax import io

RNG = np.random.default_rng(0)
X = RNG.normal(size=(30, 2))
GMM2 = gmmjax.GMM.from_natural(
    [0.5, 0.5], [[-1.0, 0.0], [1.0, 0.0]], [1.0, 1.0], covariance_type="spherical"
)
KEY = jax.random.key(0)

NAN_X = X.copy()
NAN_X[3, 1] = np.nan
INF_X = X.copy()
INF_X[0, 0] = np.inf

# (name, value, exception, message regex) for the data argument ``x``
BAD_X = [
    ("nan", NAN_X, ValueError, r"x must be finite"),
    ("inf", INF_X, ValueError, r"x must be finite"),
    ("1-d", X[:, 0], ValueError, r"x must be a 2-D array.*reshape"),
    ("3-d", X[None], ValueError, r"x must be a 2-D array"),
    ("empty", np.zeros((0, 2)), ValueError, r"x must have at least one sample"),
    ("string", "data.csv", TypeError, r"x must be an array of numbers"),
    ("none", None, TypeError, r"x must be an array of numbers"),
    ("strings", [["a", "b"]], TypeError, r"x must be an array of numbers"),
    ("complex", X + 1j, TypeError, r"x must be real"),
]

# bad ``sample_weight`` for data of 30 rows
BAD_WEIGHTS = [
    ("negative", -np.ones(30), ValueError, r"sample_weight must be non-negative"),
    ("all-zero", np.zeros(30), ValueError, r"sample_weight must not be all zero"),
    ("short", np.ones(29), ValueError, r"sample_weight must have shape \(30,\)"),
    ("2-d", np.ones((30, 1)), ValueError, r"sample_weight must have shape \(30,\)"),
    ("nan", np.r_[np.ones(29), np.nan], ValueError, r"sample_weight must be finite"),
    ("inf", np.r_[np.ones(29), np.inf], ValueError, r"sample_weight must be finite"),
    ("string", "uniform", TypeError, r"sample_weight must be an array of numbers"),
]

BAD_N_COMPONENTS = [
    ("zero", 0, ValueError, r"n_components must be >= 1"),
    ("negative", -2, ValueError, r"n_components must be >= 1"),
    ("float", 2.5, TypeError, r"n_components must be an integer"),
    ("bool", True, TypeError, r"n_components must be an integer"),
    ("string", "2", TypeError, r"n_components must be an integer"),
    ("none", None, TypeError, r"n_components must be an integer"),
]

BAD_TOL = [
    ("negative", -1e-3, ValueError, r"tol must be a finite number >= 0"),
    ("nan", float("nan"), ValueError, r"tol must be a finite number >= 0"),
    ("string", "1e-3", TypeError, r"tol must be a number"),
    ("none", None, TypeError, r"tol must be a number"),
]

BAD_MAX_STEPS = [
    ("negative", -1, ValueError, r"max_steps must be >= 0"),
    ("float", 2.5, TypeError, r"max_steps must be an integer"),
    ("bool", True, TypeError, r"max_steps must be an integer"),
    ("none", None, TypeError, r"max_steps must be an integer"),
]

BAD_REG_COVAR = [
    ("negative", -1e-6, ValueError, r"reg_covar must be a finite number >= 0"),
    ("nan", float("nan"), ValueError, r"reg_covar must be a finite number >= 0"),
    ("inf", float("inf"), ValueError, r"reg_covar must be a finite number >= 0"),
    ("string", "small", TypeError, r"reg_covar must be a number"),
    ("none", None, TypeError, r"reg_covar must be a number"),
]

BAD_COVARIANCE_TYPE = [
    ("unknown", "fulll", ValueError, r"covariance_type must be one of"),
    ("none", None, ValueError, r"covariance_type must be one of"),
    ("int", 3, ValueError, r"covariance_type must be one of"),
]


def rows(table, prefix):
    return [
        pytest.param(value, exc, msg, id=f"{prefix}-{name}")
        for name, value, exc, msg in table
    ]


# ------------------------------------------------------------------ GMM.from_natural
FROM_NATURAL = [
    (
        "weights-negative",
        {"weights": [1.5, -0.5]},
        ValueError,
        r"weights must be non-negative",
    ),
    ("weights-sum", {"weights": [0.3, 0.3]}, ValueError, r"weights must sum to 1"),
    ("weights-nan", {"weights": [np.nan, 0.5]}, ValueError, r"weights must be finite"),
    (
        "weights-2d",
        {"weights": [[0.5, 0.5]]},
        ValueError,
        r"weights must be a non-empty 1-D",
    ),
    ("weights-empty", {"weights": []}, ValueError, r"weights must be a non-empty 1-D"),
    (
        "weights-string",
        {"weights": "equal"},
        TypeError,
        r"weights must be an array of numbers",
    ),
    (
        "means-shape",
        {"means": [[0.0, 1.0]]},
        ValueError,
        r"means must have shape \(k, d\) = \(2, d\)",
    ),
    (
        "means-inf",
        {"means": [[0.0, np.inf], [1.0, 1.0]]},
        ValueError,
        r"means must be finite",
    ),
    ("means-none", {"means": None}, TypeError, r"means must be an array of numbers"),
    (
        "cov-shape",
        {"covariances": np.ones((2, 2))},
        ValueError,
        r"covariances for covariance_type='full' must have shape \(2, 2, 2\)",
    ),
    (
        "cov-nan",
        {"covariances": np.full((2, 2, 2), np.nan)},
        ValueError,
        r"covariances must be finite",
    ),
    (
        "cov-not-pd",
        {"covariances": np.stack([np.eye(2), -np.eye(2)])},
        ValueError,
        r"covariances must be positive definite",
    ),
    (
        "cov-asymmetric",
        {"covariances": np.stack([np.eye(2), [[1.0, 0.5], [0.0, 1.0]]])},
        ValueError,
        r"covariances must be symmetric",
    ),
    (
        "diag-zero",
        {"covariances": np.zeros((2, 2)), "covariance_type": "diag"},
        ValueError,
        r"positive variances",
    ),
    (
        "type-unknown",
        {"covariance_type": "round"},
        ValueError,
        r"covariance_type must be one of",
    ),
]


@pytest.mark.parametrize(
    "override, exc, msg", [pytest.param(o, e, m, id=n) for n, o, e, m in FROM_NATURAL]
)
def test_from_natural(override, exc, msg):
    args = {
        "weights": [0.5, 0.5],
        "means": [[0.0, 0.0], [1.0, 1.0]],
        "covariances": np.stack([np.eye(2)] * 2),
        "covariance_type": "full",
    }
    args.update(override)
    with pytest.raises(exc, match=msg):
        gmmjax.GMM.from_natural(
            args["weights"],
            args["means"],
            args["covariances"],
            covariance_type=args["covariance_type"],
        )


# ------------------------------------------------------------------ fit / fit_trace
FIT_EXTRA = [
    pytest.param(
        {"x": RNG.normal(size=(30, 3))},
        ValueError,
        r"x has 3 features but the model has 2",
        id="x-features",
    ),
    pytest.param(
        {"x": X[:1]},
        ValueError,
        r"x has 1 samples but the model has 2 components",
        id="x-fewer-samples",
    ),
    pytest.param(
        {"gmm0": "model"}, TypeError, r"gmm must be a gmmjax.GMM", id="gmm0-string"
    ),
    pytest.param(
        {"gmm0": None}, TypeError, r"gmm must be a gmmjax.GMM", id="gmm0-none"
    ),
    pytest.param(
        {"fitter": "em"}, TypeError, r"fitter must provide init", id="fitter-string"
    ),
    pytest.param(
        {"fitter": gmmjax.EM(reg_covar=-1.0)},
        ValueError,
        r"reg_covar must be a finite number >= 0",
        id="em-reg_covar",
    ),
    pytest.param(
        {"fitter": gmmjax.EM(max_reseeds=-1)},
        ValueError,
        r"max_reseeds must be >= 0",
        id="em-max_reseeds",
    ),
    pytest.param(
        {"fitter": gmmjax.EM(max_reseeds=1.5)},
        TypeError,
        r"max_reseeds must be an integer",
        id="em-max_reseeds-float",
    ),
]
FIT_CASES = (
    [pytest.param({"x": v}, e, m, id=f"x-{n}") for n, v, e, m in BAD_X]
    + [
        pytest.param({"sample_weight": v}, e, m, id=f"w-{n}")
        for n, v, e, m in BAD_WEIGHTS
    ]
    + [pytest.param({"tol": v}, e, m, id=f"tol-{n}") for n, v, e, m in BAD_TOL]
    + [
        pytest.param({"max_steps": v}, e, m, id=f"max_steps-{n}")
        for n, v, e, m in BAD_MAX_STEPS
    ]
    + [
        pytest.param({"fitter": gmmjax.EM(reg_covar=v)}, e, m, id=f"reg_covar-{n}")
        for n, v, e, m in BAD_REG_COVAR
    ]
    + FIT_EXTRA
)


@pytest.mark.parametrize("override, exc, msg", FIT_CASES)
def test_fit(override, exc, msg):
    args = {
        "fitter": gmmjax.EM(),
        "gmm0": GMM2,
        "x": X,
        "max_steps": 5,
        "tol": 1e-3,
        "sample_weight": None,
    }
    args.update(override)
    with pytest.raises(exc, match=msg):
        gmmjax.fit(
            args["fitter"],
            args["gmm0"],
            args["x"],
            max_steps=args["max_steps"],
            tol=args["tol"],
            sample_weight=args["sample_weight"],
        )


FIT_TRACE_CASES = (
    [pytest.param({"x": v}, e, m, id=f"x-{n}") for n, v, e, m in BAD_X[:4]]
    + [
        pytest.param({"sample_weight": v}, e, m, id=f"w-{n}")
        for n, v, e, m in BAD_WEIGHTS[:3]
    ]
    + [
        pytest.param(
            {"num_steps": 0}, ValueError, r"num_steps must be >= 1", id="num_steps-zero"
        ),
        pytest.param(
            {"num_steps": 2.0},
            TypeError,
            r"num_steps must be an integer",
            id="num_steps-float",
        ),
        pytest.param(
            {"num_steps": None},
            TypeError,
            r"num_steps must be an integer",
            id="num_steps-none",
        ),
        pytest.param(
            {"x": X[:, :1]},
            ValueError,
            r"x has 1 features but the model has 2",
            id="x-features",
        ),
    ]
)


@pytest.mark.parametrize("override, exc, msg", FIT_TRACE_CASES)
def test_fit_trace(override, exc, msg):
    args = {"x": X, "num_steps": 3, "sample_weight": None}
    args.update(override)
    with pytest.raises(exc, match=msg):
        gmmjax.fit_trace(
            gmmjax.EM(),
            GMM2,
            args["x"],
            num_steps=args["num_steps"],
            sample_weight=args["sample_weight"],
        )


# ------------------------------------------------------------------ init_gmm
INIT_CASES = (
    [pytest.param({"x": v}, e, m, id=f"x-{n}") for n, v, e, m in BAD_X]
    + [
        pytest.param({"sample_weight": v}, e, m, id=f"w-{n}")
        for n, v, e, m in BAD_WEIGHTS
    ]
    + [
        pytest.param({"n_components": v}, e, m, id=f"k-{n}")
        for n, v, e, m in BAD_N_COMPONENTS
    ]
    + [
        pytest.param({"reg_covar": v}, e, m, id=f"reg_covar-{n}")
        for n, v, e, m in BAD_REG_COVAR
    ]
    + [
        pytest.param({"covariance_type": v}, e, m, id=f"ctype-{n}")
        for n, v, e, m in BAD_COVARIANCE_TYPE
    ]
    + [
        pytest.param(
            {"n_components": 31},
            ValueError,
            r"n_components=31 must be <= n_samples=30",
            id="k-too-many",
        ),
        pytest.param(
            {"method": "kmeans+++"},
            ValueError,
            r"method must be one of",
            id="method-unknown",
        ),
        pytest.param(
            {"method": None}, ValueError, r"method must be one of", id="method-none"
        ),
        pytest.param(
            {"key": 0}, TypeError, r"key must be a jax.random key", id="key-int"
        ),
        pytest.param(
            {"key": None}, TypeError, r"key must be a jax.random key", id="key-none"
        ),
    ]
)


@pytest.mark.parametrize("override, exc, msg", INIT_CASES)
def test_init_gmm(override, exc, msg):
    args = {
        "key": KEY,
        "x": X,
        "n_components": 2,
        "covariance_type": "full",
        "method": "kmeans++",
        "sample_weight": None,
        "reg_covar": 1e-6,
    }
    args.update(override)
    key, x = args.pop("key"), args.pop("x")
    with pytest.raises(exc, match=msg):
        gmmjax.init_gmm(key, x, **args)


# ------------------------------------------------------------------ multistart
MULTISTART_CASES = (
    [pytest.param({"x": v}, e, m, id=f"x-{n}") for n, v, e, m in BAD_X]
    + [
        pytest.param({"sample_weight": v}, e, m, id=f"w-{n}")
        for n, v, e, m in BAD_WEIGHTS
    ]
    + [
        pytest.param({"n_components": v}, e, m, id=f"k-{n}")
        for n, v, e, m in BAD_N_COMPONENTS
    ]
    + [pytest.param({"tol": v}, e, m, id=f"tol-{n}") for n, v, e, m in BAD_TOL]
    + [
        pytest.param({"max_steps": v}, e, m, id=f"max_steps-{n}")
        for n, v, e, m in BAD_MAX_STEPS
    ]
    + [
        pytest.param({"covariance_type": v}, e, m, id=f"ctype-{n}")
        for n, v, e, m in BAD_COVARIANCE_TYPE
    ]
    + [
        pytest.param({"fitter": gmmjax.EM(reg_covar=v)}, e, m, id=f"reg_covar-{n}")
        for n, v, e, m in BAD_REG_COVAR
    ]
    + [
        pytest.param(
            {"n_components": 31},
            ValueError,
            r"x has 30 samples but n_components=31",
            id="k-too-many",
        ),
        pytest.param(
            {"n_init": 0}, ValueError, r"n_init must be >= 1", id="n_init-zero"
        ),
        pytest.param(
            {"n_init": 2.0}, TypeError, r"n_init must be an integer", id="n_init-float"
        ),
        pytest.param(
            {"batch_size": 0},
            ValueError,
            r"batch_size must be >= 1",
            id="batch_size-zero",
        ),
        pytest.param(
            {"init": "best"}, ValueError, r"init must be one of", id="init-unknown"
        ),
        pytest.param(
            {"key": 0}, TypeError, r"key must be a jax.random key", id="key-int"
        ),
        pytest.param(
            {"fitter": None}, TypeError, r"fitter must provide init", id="fitter-none"
        ),
    ]
)


@pytest.mark.parametrize("override, exc, msg", MULTISTART_CASES)
def test_multistart(override, exc, msg):
    args = {
        "fitter": gmmjax.EM(),
        "key": KEY,
        "x": X,
        "n_components": 2,
        "n_init": 2,
        "max_steps": 5,
        "tol": 1e-3,
        "covariance_type": "full",
        "init": "kmeans++",
        "sample_weight": None,
        "batch_size": None,
    }
    args.update(override)
    fitter, key, x = args.pop("fitter"), args.pop("key"), args.pop("x")
    with pytest.raises(exc, match=msg):
        gmmjax.multistart(fitter, key, x, **args)


# ------------------------------------------------------------------ select
SELECT_CASES = (
    [pytest.param({"x": v}, e, m, id=f"x-{n}") for n, v, e, m in BAD_X]
    + [
        pytest.param(
            {"n_components": v}, e, m.replace("an integer", "an int"), id=f"k-{n}"
        )
        for n, v, e, m in BAD_N_COMPONENTS
        if n != "none"
    ]
    + [pytest.param({"tol": v}, e, m, id=f"tol-{n}") for n, v, e, m in BAD_TOL]
    + [
        pytest.param({"max_steps": v}, e, m, id=f"max_steps-{n}")
        for n, v, e, m in BAD_MAX_STEPS
    ]
    + [
        pytest.param(
            {"n_components": None},
            TypeError,
            r"n_components must be an int or an iterable",
            id="k-none",
        ),
        pytest.param(
            {"n_components": []},
            ValueError,
            r"n_components must not be empty",
            id="k-empty",
        ),
        pytest.param(
            {"n_components": [1, 1]},
            ValueError,
            r"n_components has a repeated value",
            id="k-repeated",
        ),
        pytest.param(
            {"n_components": [31]},
            ValueError,
            r"n_components=31 must be <= n_samples=30",
            id="k-too-many",
        ),
        pytest.param(
            {"covariance_types": ["full", "ful"]},
            ValueError,
            r"covariance_type must be one of",
            id="ctype-unknown",
        ),
        pytest.param(
            {"covariance_types": []},
            ValueError,
            r"covariance_types must not be empty",
            id="ctype-empty",
        ),
        pytest.param(
            {"covariance_types": None},
            TypeError,
            r"covariance_types must be a string or an iterable",
            id="ctype-none",
        ),
        pytest.param(
            {"criterion": "likelihood"},
            ValueError,
            r"criterion must be one of",
            id="criterion-unknown",
        ),
        pytest.param(
            {"init": "best"}, ValueError, r"init must be one of", id="init-unknown"
        ),
        pytest.param(
            {"n_init": 0}, ValueError, r"n_init must be >= 1", id="n_init-zero"
        ),
        pytest.param(
            {"fitter": gmmjax.EM(reg_covar=-1.0)},
            ValueError,
            r"reg_covar must be a finite number >= 0",
            id="reg_covar-negative",
        ),
        pytest.param(
            {"fitter": "em"}, TypeError, r"fitter must provide init", id="fitter-string"
        ),
    ]
)


@pytest.mark.parametrize("override, exc, msg", SELECT_CASES)
def test_select(override, exc, msg):
    args = {
        "x": X,
        "n_components": [1, 2],
        "covariance_types": ["full"],
        "n_init": 1,
        "max_steps": 5,
    }
    args.update(override)
    x = args.pop("x")
    with pytest.raises(exc, match=msg):
        gmmjax.select(KEY, x, **args)


# ------------------------------------------------------------------ density functions
@pytest.mark.parametrize(
    "function",
    [
        gmmjax.log_prob,
        gmmjax.component_log_prob,
        gmmjax.log_likelihood,
        gmmjax.responsibilities,
        gmmjax.e_step,
        gmmjax.em_step,
    ],
    ids=lambda f: f.__name__,
)
@pytest.mark.parametrize(
    "x, exc, msg",
    [
        *rows(BAD_X, "x"),
        pytest.param(
            X[:, :1],
            ValueError,
            r"x has 1 features but the model has 2",
            id="x-features",
        ),
    ],
)
def test_density_functions(function, x, exc, msg):
    with pytest.raises(exc, match=msg):
        function(GMM2, x)


def test_sample_and_weights_of_log_likelihood():
    with pytest.raises(ValueError, match=r"n must be >= 1"):
        gmmjax.sample(KEY, GMM2, 0)
    with pytest.raises(TypeError, match=r"n must be an integer"):
        gmmjax.sample(KEY, GMM2, 2.0)
    with pytest.raises(TypeError, match=r"key must be a jax.random key"):
        gmmjax.sample(3, GMM2, 2)
    with pytest.raises(TypeError, match=r"gmm must be a gmmjax.GMM"):
        gmmjax.sample(KEY, "gmm", 2)
    for _, w, exc, msg in BAD_WEIGHTS:
        with pytest.raises(exc, match=msg):
            gmmjax.log_likelihood(GMM2, X, sample_weight=w)


def test_validation_inside_jit_is_skipped_not_crashed():
    # values are unknown under jit: shape checks still run, value checks do not,
    # and a NaN input comes back as a NaN log-likelihood, not an exception
    f = jax.jit(lambda x: gmmjax.log_likelihood(GMM2, x))
    assert np.isnan(float(f(jnp.asarray(NAN_X))))
    with pytest.raises(ValueError, match=r"x must be a 2-D array"):
        f(jnp.asarray(X[:, 0]))


# ------------------------------------------------------------------ io.load
def test_io_load_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such model file"):
        io.load(tmp_path / "missing.npz")
    text = tmp_path / "text.npz"
    text.write_text("not an archive")
    with pytest.raises(ValueError, match=r"is not a gmmjax model archive"):
        io.load(text)
    single = tmp_path / "single.npy"
    np.save(single, np.ones(3))
    with pytest.raises(ValueError, match=r"is not a gmmjax model archive"):
        io.load(single)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.ones(3))
    with pytest.raises(ValueError, match=r"no metadata"):
        io.load(foreign)
    good = tmp_path / "good.npz"
    io.save(good, GMM2)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"is not a gmmjax model archive"):
        io.load(truncated)
    with np.load(good) as archive:
        contents = dict(archive)
    nan = tmp_path / "nan.npz"
    np.savez(nan, **{**contents, "means": np.full((2, 2), np.nan)})
    with pytest.raises(ValueError, match=r"means contains NaN or infinite values"):
        io.load(nan)
    shape = tmp_path / "shape.npz"
    np.savez(shape, **{**contents, "means": np.zeros((3, 2))})
    with pytest.raises(
        ValueError, match=r"means has shape \(3, 2\), expected \(2, 2\)"
    ):
        io.load(shape)
    for path in (None, 3):
        with pytest.raises(TypeError, match=r"path must be"):
            io.load(path)
    with pytest.raises(TypeError, match=r"gmm must be a gmmjax.GMM"):
        io.save(tmp_path / "x.npz", "model")


# ------------------------------------------------------------------ the estimator
ESTIMATOR_PARAMS = [
    ("n_components", 0, ValueError, r"n_components must be >= 1"),
    ("n_components", -1, ValueError, r"n_components must be >= 1"),
    ("n_components", 2.5, TypeError, r"n_components must be an integer"),
    ("n_components", True, TypeError, r"n_components must be an integer"),
    ("n_components", "2", TypeError, r"n_components must be an integer"),
    ("n_components", None, TypeError, r"n_components must be an integer"),
    ("tol", -1e-3, ValueError, r"tol must be a finite number >= 0"),
    ("tol", "small", TypeError, r"tol must be a number"),
    ("reg_covar", -1e-6, ValueError, r"reg_covar must be a finite number >= 0"),
    ("reg_covar", float("nan"), ValueError, r"reg_covar must be a finite number"),
    ("reg_covar", None, TypeError, r"reg_covar must be a number"),
    ("max_iter", -1, ValueError, r"max_iter must be >= 0"),
    ("max_iter", 1.5, TypeError, r"max_iter must be an integer"),
    ("n_init", 0, ValueError, r"n_init must be >= 1"),
    ("covariance_type", "fulll", ValueError, r"covariance_type must be one of"),
    ("covariance_type", None, ValueError, r"covariance_type must be one of"),
    ("init_params", "kmeans+++", ValueError, r"init_params must be one of"),
    ("max_reseeds", -1, ValueError, r"max_reseeds must be >= 0"),
    ("max_reseeds", 0.5, TypeError, r"max_reseeds must be an integer"),
    ("optimizer", "adam", TypeError, r"optimizer must be None \(EM\) or an optax"),
    ("anneal", 0.5, TypeError, r"anneal must be None or a schedule"),
]


@pytest.mark.parametrize(
    "name, value, exc, msg",
    [pytest.param(*row, id=f"{row[0]}-{row[1]!r}") for row in ESTIMATOR_PARAMS],
)
def test_estimator_parameters(name, value, exc, msg):
    from gmmjax.sklearn import GaussianMixture

    with pytest.raises(exc, match=msg):
        GaussianMixture(**{"n_components": 2, name: value}).fit(X)


def test_estimator_reseeds_need_em():
    import optax

    from gmmjax.sklearn import GaussianMixture

    with pytest.raises(ValueError, match=r"max_reseeds needs the EM fitter"):
        GaussianMixture(2, optimizer=optax.adam(1e-2), max_reseeds=2).fit(X)


ESTIMATOR_X = [
    ("nan", NAN_X, ValueError, r"Input X contains NaN"),
    ("inf", INF_X, ValueError, r"Input X contains infinity"),
    ("1-d", X[:, 0], ValueError, r"Expected a 2-dimensional container|Expected 2D"),
    ("3-d", X[None], ValueError, r"Found array with dim 3"),
    ("empty", np.zeros((0, 2)), ValueError, r"Found array with 0 sample"),
    ("strings", [["a", "b"], ["c", "d"]], ValueError, r"(?i)string|could not convert"),
    ("none", None, (TypeError, ValueError), r"(?i)none|expected"),
    ("one-row", X[:1], ValueError, r"minimum of 2 is required"),
    ("fewer-than-k", X[:2], ValueError, r"n_samples >= n_components"),
]


@pytest.mark.parametrize("x, exc, msg", rows(ESTIMATOR_X, "x"))
def test_estimator_fit_data(x, exc, msg):
    from gmmjax.sklearn import GaussianMixture

    with pytest.raises(exc, match=msg):
        GaussianMixture(3).fit(x)


@pytest.mark.parametrize(
    "w, exc, msg",
    [
        pytest.param(-np.ones(30), ValueError, r"sample_weight", id="negative"),
        pytest.param(
            np.zeros(30),
            ValueError,
            r"(?i)sample.weight.*(all zero|non-zero)",
            id="zero",
        ),
        pytest.param(np.ones(29), ValueError, r"sample_weight", id="short"),
        pytest.param(
            np.r_[np.ones(29), np.nan],
            ValueError,
            r"sample_weight contains NaN",
            id="nan",
        ),
        pytest.param(
            "uniform",
            (TypeError, ValueError),
            r"sample_weight|could not convert|float",
            id="string",
        ),
    ],
)
def test_estimator_sample_weight(w, exc, msg):
    from gmmjax.sklearn import GaussianMixture

    with pytest.raises(exc, match=msg):
        GaussianMixture(2).fit(X, sample_weight=w)


@pytest.fixture(scope="module")
def fitted():
    """An estimator holding GMM2, as ``fit`` leaves it (without compiling a fit:
    these tests are about the checks of the inference methods)."""
    from gmmjax.sklearn import GaussianMixture

    gm = GaussianMixture(2, covariance_type="spherical", random_state=0)
    for name, value in gm._model_of(GMM2).items():
        setattr(gm, name, value)
    gm.n_features_in_ = 2
    return gm


@pytest.mark.parametrize(
    "method", ["predict", "predict_proba", "score", "score_samples", "bic", "aic"]
)
@pytest.mark.parametrize(
    "x, exc, msg",
    [
        pytest.param(
            RNG.normal(size=(4, 3)),
            ValueError,
            r"X has 3 features, but GaussianMixture is expecting 2",
            id="features",
        ),
        pytest.param(NAN_X, ValueError, r"Input X contains NaN", id="nan"),
        pytest.param(
            X[:, 0],
            ValueError,
            r"Expected a 2-dimensional container|Expected 2D",
            id="1-d",
        ),
    ],
)
def test_estimator_inference_data(fitted, method, x, exc, msg):
    with pytest.raises(exc, match=msg):
        getattr(fitted, method)(x)


def test_estimator_sample_and_unfitted(fitted):
    from sklearn.exceptions import NotFittedError

    from gmmjax.sklearn import GaussianMixture

    # scikit-learn's words, then gmmjax's
    with pytest.raises(ValueError, match=r"^Invalid value for 'n_samples': 0 .*>= 1"):
        fitted.sample(0)
    with pytest.raises(TypeError, match=r"n_samples must be an integer"):
        fitted.sample(2.5)
    with pytest.raises(NotFittedError, match=r"not fitted yet"):
        GaussianMixture(2).predict(X)


# ------------------------------------------------------------------ the CLI
def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def cli_error(capsys, argv):
    """Run ``gmmjax.cli.main(argv)``; return ``(exit code, stderr)`` after
    checking that stderr is one line without a traceback."""
    from gmmjax.cli import main

    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return code, err


CLI_CASES = [
    ("k-zero", ["fit", "-k", "0"], r"-k must be between 1 and the number of samples"),
    (
        "k-too-many",
        ["fit", "-k", "1000"],
        r"-k must be between 1 and the number of samples \(272\)",
    ),
    (
        "k-text",
        ["fit", "-k", "two"],
        r"argument -k/--n-components: invalid int value: 'two'",
    ),
    ("tol", ["fit", "--tol", "-1"], r"--tol and --reg-covar must be >= 0"),
    (
        "reg-covar",
        ["fit", "--reg-covar=-1e-6"],
        r"--tol and --reg-covar must be >= 0",
    ),
    (
        "reg-covar-nan",
        ["fit", "--reg-covar", "nan"],
        r"--tol and --reg-covar must be >= 0",
    ),
    ("max-steps", ["fit", "--max-steps", "-3"], r"--max-steps must be >= 0"),
    ("n-init", ["fit", "--n-init", "0"], r"--n-init must be >= 1"),
    ("max-reseeds", ["fit", "--max-reseeds", "-1"], r"--max-reseeds must be >= 0"),
    (
        "reseeds-adam",
        ["fit", "--method", "adam", "--max-reseeds", "2"],
        r"--max-reseeds needs --method em or anneal",
    ),
    (
        "covariance-type",
        ["fit", "--covariance-type", "round"],
        r"argument --covariance-type: invalid choice: 'round'",
    ),
    ("method", ["fit", "--method", "newton"], r"argument --method: invalid choice"),
    ("unknown-option", ["fit", "--colour"], r"unrecognized arguments: --colour"),
    ("no-command", [], r"the following arguments are required"),
    (
        "select-k",
        ["select", "-k", "0-3"],
        r"-k values must be between 1 and the number of samples",
    ),
    (
        "select-k-text",
        ["select", "-k", "a-b"],
        r"-k must be a number, a range like 1-6",
    ),
    ("select-repeated", ["select", "-k", "2,2"], r"-k has repeated values"),
    ("select-tol", ["select", "--tol", "-1"], r"--tol must be >= 0"),
    (
        "select-criterion",
        ["select", "--criterion", "hqic"],
        r"argument --criterion: invalid choice",
    ),
    ("select-init", ["select", "--init", "best"], r"argument --init: invalid choice"),
]


@pytest.mark.parametrize(
    "argv, msg", [pytest.param(a, m, id=n) for n, a, m in CLI_CASES]
)
def test_cli_arguments(capsys, argv, msg):
    code, err = cli_error(capsys, argv)
    assert code == 2
    assert err.startswith("gmmjax")
    assert re.search(msg, err), err


@pytest.mark.parametrize(
    "name, text, msg",
    [
        ("nan.csv", "a,b\n1,2\nnan,3\n4,5\n", r"data contain NaN or infinite values"),
        ("inf.csv", "1,2\ninf,3\n4,5\n", r"data contain NaN or infinite values"),
        ("text.csv", "a,b\n1,2\n3,oops\n", r"line 3 is not a row of numbers"),
        ("ragged.csv", "1,2\n3\n4,5\n", r"rows have different numbers of columns"),
        ("empty.csv", "\n\n", r"the file is empty"),
        ("header.csv", "a,b\n", r"no data rows after the header"),
    ],
)
def test_cli_bad_files(capsys, tmp_path, name, text, msg):
    code, err = cli_error(capsys, ["fit", _write(tmp_path, name, text)])
    assert code == 2 and re.search(msg, err), err


def test_cli_bad_npy_and_missing(capsys, tmp_path):
    cube = tmp_path / "cube.npy"
    np.save(cube, np.ones((3, 3, 3)))
    code, err = cli_error(capsys, ["fit", str(cube)])
    assert code == 2 and "expected a 2-D table of numbers" in err
    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"\x93NUMPY garbage")
    code, err = cli_error(capsys, ["fit", str(broken)])
    assert code == 2 and "cannot read" in err
    code, err = cli_error(capsys, ["fit", str(tmp_path / "missing.csv")])
    assert code == 2 and "data file not found" in err
    few = _write(tmp_path, "few.csv", "1,2\n3,4\n")
    code, err = cli_error(capsys, ["fit", few, "-k", "3"])
    assert code == 2 and "-k must be between 1 and the number of samples (2)" in err


def test_cli_error_in_a_real_process(tmp_path):
    """The installed entry point: exit status 2, one line, no traceback."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    path = _write(tmp_path, "nan.csv", "1,2\nnan,3\n")
    out = subprocess.run(
        [sys.executable, "-m", "gmmjax", "fit", path],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=120,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"gmmjax: error: {path}: data contain NaN or infinite values: "
        "line 2, column 1 is nan"
    ]
