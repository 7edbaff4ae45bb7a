"""Ward's hierarchical clustering (``gmmjax._hc``): the merges equal scipy's Ward
linkage, the partitions scipy's cuts and a naive greedy reference, and they do
not depend on the rows' order, the features' units, or integer weights in place
of repeated rows.

Random continuous data have no ties between merge costs (their gaps are far
above rounding), so the partitions are compared exactly, as sets of sets of row
indices. Most tests share one shape, ``(40, 3)`` with ``K = 40``, so one program
serves them.
"""

import jax
import numpy as np
import pytest
from conftest import count_compilations
from scipy.cluster.hierarchy import fcluster, linkage

from gmmjax._hc import hc_labels, svd_scaled, ward_merges

N, D = 40, 3


def partition(labels, rows=None):
    """The partition of ``rows`` (default all) that ``labels`` make, as a set of
    frozensets of row indices: labels up to relabelling."""
    labels = np.asarray(labels)
    rows = np.arange(len(labels)) if rows is None else np.asarray(rows)
    return {frozenset(rows[labels[rows] == v]) for v in np.unique(labels[rows])}


def data(seed, n=N, d=D):
    """A few overlapping blobs with features of different spreads."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(4, d))
    x = centers[rng.integers(0, 4, n)] + rng.normal(size=(n, d))
    return x * rng.uniform(0.5, 3.0, size=d)


def greedy_ward(z, w):
    """Naive greedy Ward, ``O(m^3)``: merge the cheapest pair of clusters until
    one is left. Returns ``{k: clusters}`` (lists of point indices) for every
    ``k`` and the merge costs in order. Points of weight 0 take no part."""
    clusters = [[i] for i in np.flatnonzero(w > 0)]
    sizes = [w[i] for i in np.flatnonzero(w > 0)]
    centroids = [z[i] for i in np.flatnonzero(w > 0)]
    cuts, costs = {len(clusters): [list(c) for c in clusters]}, []
    while len(clusters) > 1:
        best, pair = np.inf, None
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                n_i, n_j = sizes[i], sizes[j]
                cost = (
                    n_i * n_j / (n_i + n_j) * np.sum((centroids[i] - centroids[j]) ** 2)
                )
                if cost < best:
                    best, pair = cost, (i, j)
        i, j = pair
        n_i, n_j = sizes[i], sizes[j]
        centroids[i] = (n_i * centroids[i] + n_j * centroids[j]) / (n_i + n_j)
        sizes[i] = n_i + n_j
        clusters[i] = clusters[i] + clusters[j]
        del clusters[j], sizes[j], centroids[j]
        costs.append(best)
        cuts[len(clusters)] = [list(c) for c in clusters]
    return cuts, np.array(costs)


def test_svd_scaled_is_mclusts_transformation_up_to_a_common_factor():
    # mclust: scale(), then x V diag(1 / sqrt(singular values)); ours differs by
    # the factor n ** (1/4), and the axes' signs (isometries)
    x = data(0)
    s = (x - x.mean(axis=0)) / x.std(axis=0)
    _, sv, vt = np.linalg.svd(s, full_matrices=False)
    reference = s @ vt.T / np.sqrt(sv) * N**0.25
    z = np.asarray(svd_scaled(x, np.ones(N)))
    np.testing.assert_allclose(np.abs(z), np.abs(reference), rtol=1e-10, atol=1e-12)
    # the transformed data's covariance: diag(sqrt(lambda)) of the correlations
    lam = np.linalg.eigvalsh(np.corrcoef(x, rowvar=False))
    cov = np.cov(z, rowvar=False, bias=True)
    np.testing.assert_allclose(np.sort(np.diag(cov)), np.sqrt(lam), rtol=1e-10)
    np.testing.assert_allclose(cov - np.diag(np.diag(cov)), 0.0, atol=1e-12)


def test_svd_scaled_weights_and_degenerate_features():
    rng = np.random.default_rng(1)
    x = data(1)
    w = rng.integers(1, 4, size=N).astype(float)
    repeated = np.repeat(x, w.astype(int), axis=0)
    first = np.cumsum(w.astype(int)) - w.astype(int)
    # integer weights are repeated rows; a row of weight 0 takes no part
    z = np.asarray(svd_scaled(np.vstack([x, 100 + x[:3]]), np.r_[w, 0, 0, 0]))
    zr = np.asarray(svd_scaled(repeated, np.ones(len(repeated))))[first]
    np.testing.assert_allclose(np.abs(z[:N]), np.abs(zr), rtol=1e-9, atol=1e-12)
    # a constant feature and a feature equal to another (affinely) add no axes:
    # the last two are exactly 0, the others finite
    degenerate = np.column_stack([x, np.full(N, 7.3), 2.0 * x[:, 0] + 1.0])
    z = np.asarray(svd_scaled(degenerate, np.ones(N)))
    assert np.all(np.isfinite(z))
    assert np.all(z[:, D:] == 0.0) and np.all(np.any(z[:, :D] != 0.0, axis=0))


def test_merges_are_scipys_ward_linkage_and_the_cuts_its_fcluster():
    x = data(2)
    w = np.ones(N)
    z = np.asarray(svd_scaled(x, w))
    link = linkage(z, method="ward")
    a, b, cost = map(np.asarray, ward_merges(z, w))
    np.testing.assert_allclose(cost, link[:, 2] ** 2 / 2, rtol=1e-10)
    assert np.all(a < b)
    labels = np.asarray(hc_labels(x, w, n_clusters=N))
    assert labels.shape == (N, N) and labels.dtype == np.int32
    for k in range(1, N + 1):
        assert partition(labels[k - 1]) == partition(fcluster(link, k, "maxclust"))
        assert set(labels[k - 1]) == set(range(k))


def test_weighted_partitions_are_greedy_wards():
    # non-integer weights, and rows of weight 0: no points of the tree, they get
    # the nearest cluster's label
    rng = np.random.default_rng(3)
    x = data(3)
    w = rng.uniform(0.2, 5.0, size=N)
    w[[4, 17, 30]] = 0.0
    z = np.asarray(svd_scaled(x, w))
    cuts, costs = greedy_ward(z, w)
    a, b, cost = map(np.asarray, ward_merges(z, w))
    p = N - 3
    np.testing.assert_allclose(cost[: p - 1], costs, rtol=1e-10)
    assert np.all(np.isinf(cost[p - 1 :])) and np.all(a[p - 1 :] == -1)
    assert not set(a[: p - 1]) & {4, 17, 30} and not set(b[: p - 1]) & {4, 17, 30}
    labels = np.asarray(hc_labels(x, w, n_clusters=N))
    zero = np.flatnonzero(w == 0)
    for k in range(1, p + 1):
        clusters = cuts[k]
        centroids = np.array([w[c] @ z[c] / w[c].sum() for c in clusters])
        nearest = np.argmin(((z[zero, None] - centroids[None]) ** 2).sum(-1), axis=1)
        reference = np.empty(N, int)
        for j, c in enumerate(clusters):
            reference[c] = j
        reference[zero] = nearest
        assert partition(labels[k - 1]) == partition(reference)
    # fewer points than k: every point its own cluster, labels 0..p-1
    for k in range(p + 1, N + 1):
        assert partition(labels[k - 1], np.flatnonzero(w > 0)) == {
            frozenset([i]) for i in np.flatnonzero(w > 0)
        }
        assert set(labels[k - 1]) == set(range(p))


def test_integer_weights_are_repeated_rows():
    rng = np.random.default_rng(4)
    x = data(4)
    w = rng.integers(1, 4, size=N)
    repeated = np.repeat(x, w, axis=0)
    first = np.cumsum(w) - w
    labels = np.asarray(hc_labels(x, w.astype(float), n_clusters=N))
    rep_labels = np.asarray(hc_labels(repeated, np.ones(len(repeated)), n_clusters=N))
    copies = np.repeat(np.arange(N), w)
    for k in range(1, N + 1):
        # copies of a row share its label, and the distinct rows' partition is
        # the weighted one
        assert np.all(rep_labels[k - 1] == rep_labels[k - 1][first][copies])
        assert partition(rep_labels[k - 1][first]) == partition(labels[k - 1])


def test_partitions_do_not_depend_on_the_features_units():
    x = data(5)
    w = np.ones(N)
    scaled = x * np.array([1e3, 1e-3, 1.0])
    labels = np.asarray(hc_labels(x, w, n_clusters=N))
    labels_scaled = np.asarray(hc_labels(scaled, w, n_clusters=N))
    for k in range(1, N + 1):
        assert partition(labels[k - 1]) == partition(labels_scaled[k - 1])


def test_partitions_do_not_depend_on_the_rows_order():
    rng = np.random.default_rng(6)
    x = data(6)
    w = np.ones(N)
    shuffle = rng.permutation(N)
    labels = np.asarray(hc_labels(x, w, n_clusters=N))
    shuffled = np.asarray(hc_labels(x[shuffle], w, n_clusters=N))
    for k in range(1, N + 1):
        assert partition(labels[k - 1][shuffle]) == partition(shuffled[k - 1])


def test_subset_of_rows_does_not_depend_on_their_order():
    # 120 rows, the tree grown on 50 of them, chosen by value: the same rows and
    # so the same partitions after a shuffle; every row gets a label 0..k-1
    rng = np.random.default_rng(7)
    n, k_max = 120, 6
    x = data(7, n=n)
    w = rng.uniform(0.5, 2.0, size=n)
    w[rng.choice(n, 10, replace=False)] = 0.0
    shuffle = rng.permutation(n)
    labels = np.asarray(hc_labels(x, w, n_clusters=k_max, max_points=50))
    shuffled = np.asarray(
        hc_labels(x[shuffle], w[shuffle], n_clusters=k_max, max_points=50)
    )
    assert labels.shape == (k_max, n)
    for k in range(1, k_max + 1):
        assert set(labels[k - 1]) == set(range(k))
        assert set(shuffled[k - 1]) == set(range(k))
        assert partition(labels[k - 1][shuffle]) == partition(shuffled[k - 1])


def test_ties_end_in_a_valid_tree():
    # a grid with a doubled point: ties everywhere. Whatever the tree, its merges
    # join distinct clusters and their costs add up to the total sum of squares
    g = np.arange(4.0)
    z = np.array([[u, v] for u in g for v in g] + [[1.0, 2.0]])
    w = np.ones(len(z))
    a, b, cost = map(np.asarray, ward_merges(z, w))
    assert cost[0] == 0.0 and np.all(np.diff(cost) >= 0)
    np.testing.assert_allclose(cost.sum(), ((z - z.mean(0)) ** 2).sum(), rtol=1e-12)
    rep = np.arange(len(z))
    for i, j in zip(a, b, strict=True):
        assert i < j and rep[i] == i and rep[j] == j  # current representatives
        rep[rep == j] = i


def test_jit_and_float32():
    x = data(8)
    w = np.ones(N)
    jitted = jax.jit(hc_labels, static_argnames=("n_clusters", "max_points"))
    labels = np.asarray(hc_labels(x, w, n_clusters=N))
    np.testing.assert_array_equal(jitted(x, w, n_clusters=N), labels)
    with count_compilations() as log:
        jitted(x + 1.0, w, n_clusters=N).block_until_ready()
    assert log == []
    # float32: separated blobs, so rounding cannot reorder the top merges
    rng = np.random.default_rng(8)
    blobs = np.repeat(np.eye(D) * 20.0, 10, axis=0) + rng.normal(size=(30, D))
    x32 = blobs.astype(np.float32)
    labels32 = hc_labels(x32, np.ones(30, np.float32), n_clusters=4)
    labels64 = np.asarray(hc_labels(x32.astype(np.float64), np.ones(30), n_clusters=4))
    assert labels32.dtype == np.int32
    for k in range(1, 5):
        assert partition(np.asarray(labels32)[k - 1]) == partition(labels64[k - 1])
    z32 = svd_scaled(x32, np.ones(30, np.float32))
    assert z32.dtype == np.float32
    _, _, cost32 = ward_merges(z32, np.ones(30, np.float32))
    _, _, cost64 = ward_merges(np.asarray(z32, np.float64), np.ones(30))
    assert cost32.dtype == np.float32
    np.testing.assert_allclose(cost32, cost64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("value", [0, -1, 2.0, True])
def test_static_arguments_are_checked(value):
    with pytest.raises(ValueError, match="n_clusters"):
        hc_labels(np.zeros((3, 2)), None, n_clusters=value)


# ------------------------------------------------ starts of mixture fits


def test_hc_start_is_the_m_step_of_the_partition():
    import gmmjax

    x = gmmjax.datasets.faithful()
    with jax.enable_x64(True):
        gmm = gmmjax.init_gmm(jax.random.key(0), x, n_components=3, method="hc")
        again = gmmjax.init_gmm(jax.random.key(1), x, n_components=3, method="hc")
        labels = np.asarray(hc_labels(x, n_clusters=3))[2]
        resp = np.eye(3)[labels]
        ref = gmmjax.m_step(x, resp)
    # deterministic: the key is not used
    np.testing.assert_array_equal(gmm.means, again.means)
    np.testing.assert_allclose(gmm.means, ref.means, rtol=1e-12)
    np.testing.assert_allclose(gmm.covariances, ref.covariances, rtol=1e-12)
    np.testing.assert_allclose(gmm.weights, ref.weights, rtol=1e-12)


@pytest.mark.parametrize("method", ["hc", "kmeans", "kmeans++"])
def test_starts_do_not_depend_on_the_features_units(method):
    """Multiplying a feature by 1,000 gives the same partition: the model of
    the scaled data is the scaled model."""
    import gmmjax

    x = data(3, n=80)
    scale = np.array([1e3, 1.0, 1e-2])
    with jax.enable_x64(True):
        key = jax.random.key(5)
        kw = dict(n_components=4, covariance_type="diag", method=method)
        plain = gmmjax.init_gmm(key, x, **kw, reg_covar=0.0)
        scaled = gmmjax.init_gmm(key, x * scale, **kw, reg_covar=0.0)
    np.testing.assert_allclose(scaled.means, plain.means * scale, rtol=1e-9)
    np.testing.assert_allclose(scaled.weights, plain.weights, rtol=1e-12)
    np.testing.assert_allclose(
        scaled.covariances, plain.covariances * scale**2, rtol=1e-9
    )


def test_select_starts_every_cell_from_its_cut_of_one_tree():
    """Every cell of ``select`` adds to its keyed starts a start from the
    hierarchical partition at its ``k``: with ``n_init=1``, the better of the
    fit from that partition and the fit from key 0's k-means++ start (no
    rounds of starts from the neighbouring cells). The masked program gathers
    each lane's cut of the tree."""
    import gmmjax

    x = gmmjax.datasets.faithful()
    key = jax.random.key(0)
    with jax.enable_x64(True):
        result = gmmjax.select(
            key,
            x,
            n_components=[1, 2, 4],
            covariance_types=["diag"],
            n_init=1,
            max_steps=50,
            split_merge_rounds=0,
        )
        # select's default floor: 1e-6 of each feature's variance
        floor = gmmjax.relative_reg_covar(x, 1e-6)
        for k in (1, 2, 4):
            kw = dict(n_components=k, covariance_type="diag", reg_covar=floor)
            lls = []
            for start in (
                gmmjax.init_gmm(key, x, method="hc", **kw),
                gmmjax.init_gmm(jax.random.fold_in(key, 0), x, **kw),
            ):
                em = gmmjax.EM(reg_covar=floor)
                alone = gmmjax.fit(em, start, x, max_steps=50)
                lls.append(float(alone.log_likelihood))
            np.testing.assert_allclose(
                float(result.fits[(k, "diag")].log_likelihood), max(lls), rtol=1e-10
            )
