"""Value-ordered customer clustering: k-means or a Gaussian mixture, mapped to grades A–E.

What :meth:`ValueClustering.fit` does, in order:

1. **Missing values** are filled by the rules of :func:`fit_missing_fills` (e.g. ``recency_days`` of a
   customer who never bought = the longest recency seen at fit; money and counts = 0). The fill values
   are learned at fit and reused at predict.
2. **Signed log1p** (``sign(x) * log1p(|x|)``) on money and count columns (:func:`is_log_feature`), so
   heavy-tailed spend does not dominate the distances; the sign keeps net-negative spend (returns) finite.
3. **Robust scaling**: ``(x - median) / IQR`` with the fit medians and IQRs (standard deviation when the
   IQR is 0, 1 when both are 0).
4. **k** within ``k_range``: the highest mean silhouette on a seeded sample of ``silhouette_sample``
   customers (k-means default) or the lowest BIC on all customers (Gaussian-mixture default); ties go to
   the smaller k. Gaussian-mixture components that receive no customer are dropped.
5. **Value order**: clusters are renumbered by value, descending (cluster 0 = most valuable). A cluster's
   value is the mean of ``y`` over its customers when ``y`` (e.g. future spend) is given at fit, else the
   mean of ``value_column`` (current net spend). :meth:`ValueClustering.predict_value` returns this value,
   so the model ranks customers like any other score in the comparison.
6. **Grades** by cumulative customer share (:func:`grades_by_cumulative_share`), so any k maps to A–E
   monotonically: a more valuable cluster never gets a worse grade.

Everything needed to predict is exported by :meth:`ValueClustering.to_dict` as plain JSON-able values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.utils.validation import check_is_fitted

from segml import catalog

#: default clustering features (feature-table contract columns)
DEFAULT_CLUSTER_FEATURES: tuple[str, ...] = (
    "recency_days",
    "frequency",
    "monetary_total",
    "monetary_mean",
    "spend_365d",
    "active_months_share",
    "t_days",
)

#: default grade shares, best grade first (A 5 %, B 15 %, C 30 %, D 30 %, E 20 %)
DEFAULT_GRADE_SHARES: tuple[float, ...] = (0.05, 0.15, 0.30, 0.30, 0.20)

GRADE_LETTERS = "ABCDEFGHIJ"

FORMAT_VERSION = 1

# ---------------------------------------------------------------------------------------------------------------
# Feature kinds and missing values (shared with segml.models.tree), from the feature catalog

#: a column's kind (:data:`segml.catalog.Kind`): money, count, days, ratio, share, flag, numeric, …
FeatureKind = catalog.Kind


def feature_kind(column: str) -> FeatureKind:
    """The kind of a feature-table column, which decides its transform, missing fill and display rounding.

    Parameters
    ----------
    column:
        A feature-table column name.

    Returns
    -------
    The catalog kind (:func:`segml.catalog.kind`): ``"money"`` (currency), ``"count"``, ``"days"``,
    ``"ratio"``, ``"share"``, ``"flag"``, …; a name the catalog does not know (an attribute column) is
    ``"numeric"``.
    """
    return catalog.kind(column)


def is_log_feature(column: str) -> bool:
    """True for the columns the catalog log-transforms (money and counts): signed log1p before clustering."""
    return catalog.transform(column) == "signed_log1p"


def fit_missing_fills(frame: pd.DataFrame, columns: Sequence[str]) -> dict[str, float]:
    """Learn the value that replaces a missing (NaN or infinite) entry of each column.

    Rules come from the feature catalog (:func:`segml.catalog.fill_rule`): ``max`` for recency, the
    inter-purchase gaps and the churn-risk ratio (the largest finite value seen in ``frame``: no purchase
    history = as lapsed as the most lapsed customer); ``zero`` for money, count, ratio, share, flag and the
    other ``*_days`` columns (no purchases = nothing spent, no tenure); ``median`` for any column the catalog
    does not know. A column with no finite value gets 0.

    Parameters
    ----------
    frame:
        The fit data.
    columns:
        Numeric columns of ``frame``.

    Returns
    -------
    ``{column: fill value}`` (plain floats, JSON-able).
    """
    fills: dict[str, float] = {}
    for column in columns:
        values = frame[column].to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        rule = catalog.fill_rule(column, frame[column].dtype)
        if finite.size == 0:
            fills[column] = 0.0
        elif rule == "max":
            fills[column] = float(finite.max())
        elif rule == "median":
            fills[column] = float(np.median(finite))
        else:
            fills[column] = 0.0
    return fills


def fill_missing(frame: pd.DataFrame, fills: dict[str, float]) -> np.ndarray:
    """The columns of ``fills`` as a float64 matrix with NaN/±inf replaced by the fill values."""
    columns = list(fills)
    values = frame[columns].to_numpy(dtype=float, copy=True)
    fill_row = np.array([fills[c] for c in columns], dtype=float)
    missing = ~np.isfinite(values)
    if missing.any():
        values[missing] = np.broadcast_to(fill_row, values.shape)[missing]
    return values


def check_feature_frame(X: Any, columns: Sequence[str], who: str) -> pd.DataFrame:
    """Check that ``X`` is a non-empty DataFrame holding numeric ``columns``; raise ``ValueError`` if not."""
    if not isinstance(X, pd.DataFrame):
        raise ValueError(f"{who}: expected a pandas DataFrame of features, got {type(X).__name__}")
    if len(X) == 0:
        raise ValueError(f"{who}: the feature table has 0 rows")
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise ValueError(
            f"{who}: feature table ({len(X):,} rows) lacks column(s) {', '.join(missing)}; "
            f"it has {', '.join(map(str, X.columns))}"
        )
    not_numeric = [
        c for c in columns if not (pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c]))
    ]
    if not_numeric:
        raise ValueError(
            f"{who}: column(s) {', '.join(not_numeric)} of the feature table ({len(X):,} rows) are not numeric"
        )
    return X


def check_target(y: Any, n_rows: int, who: str) -> np.ndarray:
    """``y`` as a finite float64 vector of length ``n_rows``; raise ``ValueError`` otherwise."""
    values = np.asarray(y, dtype=float).reshape(-1)
    if values.shape[0] != n_rows:
        raise ValueError(f"{who}: y has {values.shape[0]:,} values for {n_rows:,} feature rows")
    bad = int((~np.isfinite(values)).sum())
    if bad:
        raise ValueError(f"{who}: y has {bad:,} missing or infinite values of {n_rows:,}")
    return values


def signed_log1p(values: np.ndarray) -> np.ndarray:
    """``sign(x) * log1p(|x|)``: log1p that stays finite and monotone for negative values."""
    return np.sign(values) * np.log1p(np.abs(values))


# ---------------------------------------------------------------------------------------------------------------
# Grades from cumulative share


def grades_by_cumulative_share(
    cluster_shares: Sequence[float],
    grade_shares: Sequence[float] = DEFAULT_GRADE_SHARES,
    grade_labels: Sequence[str] | None = None,
) -> list[str]:
    """Map clusters, sorted by value descending, to grades by cumulative customer share.

    Rule: cluster ``i`` covers the customer-share interval ``[c_i, c_i + s_i)`` where ``c_i`` is the share
    of all more valuable clusters. It gets the grade whose interval of the cumulative ``grade_shares``
    (A = ``[0, 0.05)``, B = ``[0.05, 0.20)``, … with the defaults) contains the interval's midpoint
    ``c_i + s_i / 2`` (a midpoint exactly on a boundary goes to the lower grade). Midpoints increase
    with the cluster index, so grades never invert; with few clusters some grades stay unused.

    Parameters
    ----------
    cluster_shares:
        Customer share of each cluster, most valuable first (normalised to sum to 1).
    grade_shares:
        Target share of each grade, best first (positive, normalised to sum to 1).
    grade_labels:
        Names of the grades; default ``A, B, C, …``.

    Returns
    -------
    One grade label per cluster.
    """
    shares = np.asarray(cluster_shares, dtype=float)
    targets = np.asarray(grade_shares, dtype=float)
    if shares.ndim != 1 or shares.size == 0 or (shares < 0).any() or shares.sum() <= 0:
        raise ValueError(f"cluster shares must be non-negative with a positive sum, got {list(shares)}")
    if targets.ndim != 1 or targets.size == 0 or (targets <= 0).any():
        raise ValueError(f"grade shares must be positive, got {list(targets)}")
    labels = list(grade_labels) if grade_labels is not None else list(GRADE_LETTERS[: targets.size])
    if len(labels) != targets.size:
        raise ValueError(f"{len(labels)} grade labels for {targets.size} grade shares")
    shares = shares / shares.sum()
    targets = targets / targets.sum()
    midpoints = np.cumsum(shares) - shares / 2
    upper_bounds = np.cumsum(targets)[:-1]
    grade_index = np.searchsorted(upper_bounds, midpoints, side="right")
    return [labels[i] for i in grade_index]


# ---------------------------------------------------------------------------------------------------------------
# The estimator

#: covariance regularisation of the Gaussian mixture, in robust-scaled units: large enough that a spike of
#: identical customers (e.g. all one-time buyers with frequency 0) cannot become a zero-variance component
GMM_REG_COVAR = 1e-3


class ValueClustering(ClusterMixin, BaseEstimator):
    """Customer clusters numbered and graded by value.

    Parameters
    ----------
    method:
        ``"kmeans"`` or ``"gmm"`` (Gaussian mixture).
    k_range:
        Inclusive ``(min_k, max_k)`` searched for the number of clusters (``min_k >= 2``).
    features:
        Feature-table columns to cluster on; default :data:`DEFAULT_CLUSTER_FEATURES`.
    value_column:
        Column whose cluster mean orders the clusters when no ``y`` is given at fit.
    grade_shares:
        Target customer share per grade, best first (A–E by default).
    selection:
        ``"silhouette"`` (mean silhouette on a seeded sample, higher is better) or ``"bic"`` (Gaussian
        mixture only, lower is better). Default: silhouette for k-means, BIC for the mixture.
    silhouette_sample:
        Customers sampled (seeded) to compute the silhouette; silhouette costs O(sample²).
    n_init:
        Restarts per k (k-means seeds / mixture initialisations); the best fit is kept. Default 10 for
        k-means, 3 for the mixture (each mixture restart runs EM to convergence).
    covariance_type:
        ``"full"`` or ``"diag"`` covariances for the mixture.
    random_state:
        Seed of k-means, the mixture and the silhouette sample.

    Attributes
    ----------
    k_ : int
        The selected k. ``n_clusters_`` may be smaller when mixture components receive no customer.
    selection_ : dict[int, float]
        Criterion value per k tried.
    cluster_values_ : ndarray
        Value of each cluster (cluster 0 first): mean ``y`` at fit if given, else mean ``value_column``.
    cluster_grades_ : list[str]
        Grade of each cluster.
    """

    #: model-family interface (:class:`segml.models.base.ModelFamily`): the value of a cluster is money
    #: (mean future spend of its customers at fit, or their mean ``value_column``)
    predicts_money: ClassVar[bool] = True
    #: registry family name written into :meth:`to_dict` (:mod:`segml.models.registry`)
    family: ClassVar[str] = "clustering"

    def __init__(
        self,
        method: Literal["kmeans", "gmm"] = "kmeans",
        k_range: tuple[int, int] = (3, 8),
        features: Sequence[str] | None = None,
        value_column: str = "monetary_total",
        grade_shares: Sequence[float] = DEFAULT_GRADE_SHARES,
        selection: Literal["silhouette", "bic"] | None = None,
        silhouette_sample: int = 5000,
        n_init: int | None = None,
        covariance_type: Literal["full", "diag"] = "full",
        random_state: int | None = 42,
    ) -> None:
        self.method = method
        self.k_range = k_range
        self.features = features
        self.value_column = value_column
        self.grade_shares = grade_shares
        self.selection = selection
        self.silhouette_sample = silhouette_sample
        self.n_init = n_init
        self.covariance_type = covariance_type
        self.random_state = random_state

    # -- fitting -------------------------------------------------------------------------------------------

    def _validated_params(self) -> tuple[str, int, int]:
        if self.method not in ("kmeans", "gmm"):
            raise ValueError(f"ValueClustering: method must be 'kmeans' or 'gmm', got {self.method!r}")
        selection = self.selection or ("silhouette" if self.method == "kmeans" else "bic")
        if selection not in ("silhouette", "bic"):
            raise ValueError(f"ValueClustering: selection must be 'silhouette' or 'bic', got {selection!r}")
        if selection == "bic" and self.method != "gmm":
            raise ValueError(
                "ValueClustering: selection='bic' needs method='gmm' (k-means has no likelihood)"
            )
        if self.covariance_type not in ("full", "diag"):
            raise ValueError(
                f"ValueClustering: covariance_type must be 'full' or 'diag', got {self.covariance_type!r}"
            )
        try:
            k_min, k_max = (int(k) for k in self.k_range)
        except (TypeError, ValueError):
            raise ValueError(
                f"ValueClustering: k_range must be (min_k, max_k), got {self.k_range!r}"
            ) from None
        if not 2 <= k_min <= k_max:
            raise ValueError(f"ValueClustering: k_range needs 2 <= min_k <= max_k, got {self.k_range!r}")
        grades_by_cumulative_share([1.0], self.grade_shares)  # validates grade_shares
        return selection, k_min, k_max

    def fit(self, X: pd.DataFrame, y: Any = None) -> ValueClustering:
        """Fit the scaler, choose k, fit the clusters and order and grade them by value.

        Parameters
        ----------
        X:
            Feature table (contract columns; at least ``features`` and ``value_column``).
        y:
            Optional per-customer value to order clusters by (e.g. future spend in training labels), aligned
            with the rows of ``X`` by position.

        Returns
        -------
        self
        """
        selection, k_min, k_max = self._validated_params()
        features = list(self.features) if self.features is not None else list(DEFAULT_CLUSTER_FEATURES)
        frame = check_feature_frame(X, [*features, self.value_column], "ValueClustering.fit")
        target = None if y is None else check_target(y, len(frame), "ValueClustering.fit")

        self.features_ = features
        self.log_features_ = [c for c in features if is_log_feature(c)]
        self.fill_values_ = fit_missing_fills(frame, features)
        transformed = self._log_transform(fill_missing(frame, self.fill_values_))
        q25, median, q75 = np.percentile(transformed, [25, 50, 75], axis=0)
        scale = q75 - q25
        std = transformed.std(axis=0)
        scale = np.where(scale > 0, scale, np.where(std > 0, std, 1.0))
        self.center_ = median
        self.scale_ = scale
        scaled = (transformed - median) / scale

        n_distinct = len(np.unique(scaled, axis=0))
        candidate_ks = [k for k in range(k_min, k_max + 1) if k <= n_distinct and k < len(frame)]
        if not candidate_ks:
            raise ValueError(
                f"ValueClustering.fit: {len(frame):,} rows with {n_distinct:,} distinct feature vectors "
                f"cannot form {k_min}..{k_max} clusters"
            )
        sample_index = self._silhouette_sample_index(len(frame)) if selection == "silhouette" else None
        self.selection_criterion_ = selection
        self.selection_: dict[int, float] = {}
        fitted: dict[int, dict[str, np.ndarray]] = {}
        for k in candidate_ks:
            params = self._fit_k(scaled, k)
            fitted[k] = params
            if selection == "bic":
                self.selection_[k] = float(params.pop("bic"))
            else:
                params.pop("bic", None)
                labels = self._assign(scaled, params)
                self.selection_[k] = _sample_silhouette(scaled, labels, sample_index)
        scores = np.array([self.selection_[k] for k in candidate_ks])
        best = int(np.argmax(scores)) if selection == "silhouette" else int(np.argmin(scores))
        self.k_ = candidate_ks[best]  # argmax/argmin return the first (smallest k) of ties
        self._set_value_ordered_params(fitted[self.k_], scaled, frame, target)
        return self

    def _log_transform(self, values: np.ndarray) -> np.ndarray:
        columns = [i for i, c in enumerate(self.features_) if c in self.log_features_]
        out = values.copy()
        out[:, columns] = signed_log1p(values[:, columns])
        return out

    def _silhouette_sample_index(self, n_rows: int) -> np.ndarray:
        size = min(int(self.silhouette_sample), n_rows)
        rng = np.random.RandomState(self.random_state)
        return np.sort(rng.choice(n_rows, size=size, replace=False))

    def _fit_k(self, scaled: np.ndarray, k: int) -> dict[str, np.ndarray]:
        if self.method == "kmeans":
            n_init = self.n_init or 10
            kmeans = KMeans(n_clusters=k, n_init=n_init, random_state=self.random_state).fit(scaled)
            return {"centroids": kmeans.cluster_centers_}
        mixture = GaussianMixture(
            n_components=k,
            covariance_type=self.covariance_type,
            n_init=self.n_init or 3,
            reg_covar=GMM_REG_COVAR,
            random_state=self.random_state,
        ).fit(scaled)
        return {
            "weights": mixture.weights_,
            "means": mixture.means_,
            "covariances": mixture.covariances_,
            "precisions_cholesky": mixture.precisions_cholesky_,
            "bic": np.float64(mixture.bic(scaled)),
        }

    def _assign(self, scaled: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
        """Index of the nearest centroid (k-means) or most probable component (mixture), per row."""
        if "centroids" in params:
            centroids = params["centroids"]
            distances = np.empty((scaled.shape[0], centroids.shape[0]))
            for j, centroid in enumerate(centroids):
                distances[:, j] = ((scaled - centroid) ** 2).sum(axis=1)
            return distances.argmin(axis=1)
        return _mixture_log_density(scaled, params).argmax(axis=1)

    def _set_value_ordered_params(
        self,
        params: dict[str, np.ndarray],
        scaled: np.ndarray,
        frame: pd.DataFrame,
        target: np.ndarray | None,
    ) -> None:
        labels = self._assign(scaled, params)
        n_raw = next(iter(params.values())).shape[0]
        sizes = np.bincount(labels, minlength=n_raw)
        if target is not None:
            value, self.value_source_ = target, "y"
        else:
            value = np.nan_to_num(frame[self.value_column].to_numpy(dtype=float), nan=0.0)
            self.value_source_ = self.value_column
        sums = np.bincount(labels, weights=value, minlength=n_raw)
        occupied = np.flatnonzero(sizes > 0)  # drop mixture components that won no customer
        means = sums[occupied] / sizes[occupied]
        order = occupied[np.argsort(-means, kind="stable")]

        self.cluster_params_ = {name: array[order] for name, array in params.items()}
        self.n_clusters_ = len(order)
        self.cluster_values_ = sums[order] / sizes[order]
        self.cluster_sizes_ = sizes[order]
        self.cluster_shares_ = self.cluster_sizes_ / self.cluster_sizes_.sum()
        self.grade_labels_ = list(GRADE_LETTERS[: len(self.grade_shares)])
        self.cluster_grades_ = grades_by_cumulative_share(
            self.cluster_shares_, self.grade_shares, self.grade_labels_
        )

    # -- prediction ----------------------------------------------------------------------------------------

    def _scaled(self, X: pd.DataFrame, who: str) -> np.ndarray:
        check_is_fitted(self, "cluster_params_")
        frame = check_feature_frame(X, self.features_, who)
        transformed = self._log_transform(fill_missing(frame, self.fill_values_))
        return (transformed - self.center_) / self.scale_

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Value-ordered cluster id per customer (0 = most valuable cluster)."""
        return self._assign(self._scaled(X, "ValueClustering.predict"), self.cluster_params_)

    def predict_grade(self, X: pd.DataFrame) -> np.ndarray:
        """Grade (``"A"`` … ``"E"``) of each customer's cluster."""
        clusters = self.predict(X)
        return np.asarray(self.cluster_grades_, dtype=object)[clusters]

    def predict_value(self, X: pd.DataFrame) -> np.ndarray:
        """Numeric score per customer: the value of the customer's cluster.

        That is the mean of the ``y`` given at fit (e.g. mean future spend of the cluster in the training
        labels) or, without ``y``, the cluster's mean ``value_column`` at fit (``value_source_`` says
        which). Customers of the same cluster tie.
        """
        clusters = self.predict(X)
        return self.cluster_values_[clusters]

    def profile(self, X: pd.DataFrame, y: Any = None) -> pd.DataFrame:
        """One row per cluster describing the customers of ``X`` assigned to it.

        Parameters
        ----------
        X:
            Feature table; ``monetary_total``, ``recency_days`` and ``frequency`` are summarised when present.
        y:
            Optional per-customer outcome (e.g. future spend); adds ``mean_<name>`` and ``share_<name>``
            where ``<name>`` is ``y.name`` for a named Series, else ``y``.

        Returns
        -------
        DataFrame with columns cluster, grade, size, share_customers, cluster_value (the model's value of the
        cluster), mean_monetary_total, median_monetary_total, share_value (share of total monetary_total),
        mean_recency_days (customers with a purchase), mean_frequency, and the ``y`` columns. Clusters with
        no customer in ``X`` have size 0 and NaN means.
        """
        clusters = self.predict(X)
        k = self.n_clusters_
        sizes = np.bincount(clusters, minlength=k)
        table = pd.DataFrame(
            {
                "cluster": np.arange(k),
                "grade": self.cluster_grades_,
                "size": sizes,
                "share_customers": sizes / sizes.sum(),
                "cluster_value": self.cluster_values_,
            }
        )
        per_cluster = pd.DataFrame({"cluster": clusters}, index=X.index)
        for column in ("monetary_total", "recency_days", "frequency"):
            if column in X.columns:
                per_cluster[column] = X[column].to_numpy(dtype=float)
        grouped = per_cluster.groupby("cluster")
        if "monetary_total" in per_cluster:
            money = grouped["monetary_total"]
            table["mean_monetary_total"] = money.mean().reindex(table["cluster"]).to_numpy()
            table["median_monetary_total"] = money.median().reindex(table["cluster"]).to_numpy()
            table["share_value"] = _shares(money.sum().reindex(table["cluster"], fill_value=0.0))
        for column in ("recency_days", "frequency"):
            if column in per_cluster:
                table[f"mean_{column}"] = grouped[column].mean().reindex(table["cluster"]).to_numpy()
        if y is not None:
            target = check_target(y, len(X), "ValueClustering.profile")
            name = y.name if isinstance(y, pd.Series) and y.name is not None else "y"
            sums = np.bincount(clusters, weights=target, minlength=k)
            with np.errstate(invalid="ignore", divide="ignore"):
                table[f"mean_{name}"] = np.where(sizes > 0, sums / np.maximum(sizes, 1), np.nan)
            table[f"share_{name}"] = _shares(pd.Series(sums))
        return table

    # -- export --------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to predict, as plain JSON-able values (lists, floats, strings)."""
        check_is_fitted(self, "cluster_params_")
        params = self.get_params()
        params["k_range"] = [int(k) for k in params["k_range"]]
        params["grade_shares"] = [float(s) for s in params["grade_shares"]]
        if params["features"] is not None:
            params["features"] = list(params["features"])
        return {
            "family": self.family,
            "model": "segml.models.clustering.ValueClustering",
            "format_version": FORMAT_VERSION,
            "params": params,
            "features": list(self.features_),
            "log_features": list(self.log_features_),
            "fill_values": {c: float(v) for c, v in self.fill_values_.items()},
            "scaler": {"center": self.center_.tolist(), "scale": self.scale_.tolist()},
            "k_selected": int(self.k_),
            "selection_criterion": self.selection_criterion_,
            "selection": {str(k): float(v) for k, v in self.selection_.items()},
            "clusters": {name: array.tolist() for name, array in self.cluster_params_.items()},
            "value_source": self.value_source_,
            "cluster_values": self.cluster_values_.tolist(),
            "cluster_sizes": [int(s) for s in self.cluster_sizes_],
            "grade_labels": list(self.grade_labels_),
            "cluster_grades": list(self.cluster_grades_),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValueClustering:
        """Rebuild a fitted model from :meth:`to_dict` output (after a JSON round trip, too)."""
        if data.get("model") != "segml.models.clustering.ValueClustering":
            raise ValueError(f"not a ValueClustering export: model={data.get('model')!r}")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"ValueClustering export format {data.get('format_version')!r} is not supported")
        params = dict(data["params"])
        params["k_range"] = tuple(params["k_range"])
        params["grade_shares"] = tuple(params["grade_shares"])
        if params["features"] is not None:
            params["features"] = tuple(params["features"])
        model = cls(**params)
        model.features_ = list(data["features"])
        model.log_features_ = list(data["log_features"])
        model.fill_values_ = {c: float(v) for c, v in data["fill_values"].items()}
        model.center_ = np.asarray(data["scaler"]["center"], dtype=float)
        model.scale_ = np.asarray(data["scaler"]["scale"], dtype=float)
        model.k_ = int(data["k_selected"])
        model.selection_criterion_ = data["selection_criterion"]
        model.selection_ = {int(k): float(v) for k, v in data["selection"].items()}
        model.cluster_params_ = {name: np.asarray(v, dtype=float) for name, v in data["clusters"].items()}
        model.value_source_ = data["value_source"]
        model.cluster_values_ = np.asarray(data["cluster_values"], dtype=float)
        model.cluster_sizes_ = np.asarray(data["cluster_sizes"], dtype=np.int64)
        model.cluster_shares_ = model.cluster_sizes_ / model.cluster_sizes_.sum()
        model.n_clusters_ = len(model.cluster_values_)
        model.grade_labels_ = list(data["grade_labels"])
        model.cluster_grades_ = list(data["cluster_grades"])
        return model


def _mixture_log_density(scaled: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """Weighted log density of each row under each mixture component (``full`` or ``diag`` covariances)."""
    weights, means, chol = params["weights"], params["means"], params["precisions_cholesky"]
    n_features = scaled.shape[1]
    out = np.empty((scaled.shape[0], len(weights)))
    for j in range(len(weights)):
        if chol.ndim == 3:  # full: precision = chol @ chol.T
            projected = (scaled - means[j]) @ chol[j]
            log_det = np.log(np.diag(chol[j])).sum()
        else:  # diag: chol holds 1 / standard deviation per feature
            projected = (scaled - means[j]) * chol[j]
            log_det = np.log(chol[j]).sum()
        mahalanobis = (projected**2).sum(axis=1)
        out[:, j] = -0.5 * (n_features * np.log(2 * np.pi) + mahalanobis) + log_det + np.log(weights[j])
    return out


def _sample_silhouette(scaled: np.ndarray, labels: np.ndarray, sample_index: np.ndarray) -> float:
    """Mean silhouette of the sampled rows (-1 when the sample holds fewer than two clusters)."""
    sample_labels = labels[sample_index]
    n_labels = len(np.unique(sample_labels))
    if n_labels < 2 or n_labels >= len(sample_index):
        return -1.0
    return float(silhouette_score(scaled[sample_index], sample_labels))


def _shares(totals: pd.Series) -> np.ndarray:
    """Each entry's share of the total (NaN when the total is 0)."""
    values = totals.to_numpy(dtype=float)
    total = values.sum()
    return values / total if total != 0 else np.full(values.shape, np.nan)
