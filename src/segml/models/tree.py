"""Shallow decision trees that read as grading rules.

Two models share one representation (a tree of depth at most :data:`MAX_RULE_DEPTH`):

* :class:`SpendTree` predicts future spend in currency. It is one of the compared models: its prediction
  is the leaf mean of the training spend, so it ranks customers like any other score.
* :class:`GradeRulesTree` is distilled from the final grades A–E: the rules a sales team can read, with
  their fidelity (agreement with the grades they summarise).

Inputs are feature-table columns (see the feature contract). Missing values are filled with the rules of
:func:`segml.models.clustering.fit_missing_fills` (recency of a customer who never bought = the longest
recency seen at fit, money and counts = 0, other columns = fit median); the fill values are exported and each
JSON condition says whether a missing value satisfies it.

Everything needed to predict is exported as nested JSON (:meth:`to_dict`): internal nodes hold ``feature``,
``threshold``, ``left`` (``value <= threshold``) and ``right``; leaves hold the prediction. Predicting
from the dict gives exactly scikit-learn's leaves: like scikit-learn, feature values are compared as
float32 against float64 thresholds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor
from sklearn.utils.validation import check_is_fitted

from segml import catalog
from segml.evaluate import normalized_gini
from segml.models.clustering import (
    check_feature_frame,
    check_target,
    feature_kind,
    fill_missing,
    fit_missing_fills,
    signed_log1p,
)

#: deepest tree allowed: deeper rules stop being readable
MAX_RULE_DEPTH = 4

#: columns of a feature or training frame that are never model inputs (identifiers, cutoffs, labels) plus
#: ``has_purchases`` (same information as n_purchase_days > 0), from the feature catalog
NON_FEATURE_COLUMNS = catalog.non_feature_columns() | catalog.redundant_columns()

FORMAT_VERSION = 1


def default_tree_features(frame: pd.DataFrame) -> list[str]:
    """Numeric and boolean columns of ``frame``, in frame order, except :data:`NON_FEATURE_COLUMNS` and any
    column starting with ``future_`` (labels must never become inputs)."""
    return [
        str(column)
        for column in frame.columns
        if column not in NON_FEATURE_COLUMNS
        and not str(column).startswith("future_")
        and (pd.api.types.is_numeric_dtype(frame[column]) or pd.api.types.is_bool_dtype(frame[column]))
    ]


def describe_feature(column: str) -> str:
    """Plain-words name of a column from the feature catalog (any window), else the column name."""
    return catalog.describe(column) if catalog.is_catalogued(column) else column


def format_threshold(column: str, value: float) -> str:
    """A threshold rounded for reading, by the column's catalog kind: money to 2 decimals, days to the
    nearest 0.5, counts to 1 decimal, ratios/shares/flags to 2 decimals, anything else to 4 significant
    digits. JSON rules keep exact values."""
    kind = feature_kind(column)
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "days":
        half = round(value * 2) / 2
        return f"{half:,.0f}" if float(half).is_integer() else f"{half:,.1f}"
    if kind == "count":
        return f"{value:,.1f}"
    if kind in ("ratio", "share", "flag"):
        return f"{value:.2f}"
    return f"{value:.4g}"


def format_money(value: float) -> str:
    """Currency amount for rule text: whole units from 100 up, else 2 decimals."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


class _RulesTree(BaseEstimator):
    """Shared machinery: feature preparation, node arrays, traversal, rule paths, nested JSON."""

    _model_name: ClassVar[str]

    # -- fitting helpers -----------------------------------------------------------------------------------

    def _check_depth(self) -> None:
        depth = self.max_depth
        if (
            isinstance(depth, bool)
            or not isinstance(depth, int | np.integer)
            or not 1 <= depth <= MAX_RULE_DEPTH
        ):
            raise ValueError(
                f"{type(self).__name__}: max_depth must be an integer from 1 to {MAX_RULE_DEPTH} "
                f"(deeper rules are not readable), got {depth!r}"
            )

    def _prepare_fit(self, X: pd.DataFrame) -> np.ndarray:
        who = f"{type(self).__name__}.fit"
        if self.features is None:
            check_feature_frame(X, [], who)
            features = default_tree_features(X)
            if not features:
                raise ValueError(f"{who}: the feature table ({len(X):,} rows) has no numeric column")
        else:
            features = [str(c) for c in self.features]
        frame = check_feature_frame(X, features, who)
        self.features_ = features
        self.fill_values_ = fit_missing_fills(frame, features)
        self.n_train_ = len(frame)
        return fill_missing(frame, self.fill_values_)

    def _matrix(self, X: pd.DataFrame, who: str) -> np.ndarray:
        check_is_fitted(self, "node_feature_")
        return fill_missing(check_feature_frame(X, self.features_, who), self.fill_values_)

    def _store_nodes(self, estimator: DecisionTreeRegressor | DecisionTreeClassifier) -> None:
        tree = estimator.tree_
        self.node_feature_ = np.where(tree.children_left >= 0, tree.feature, -1).astype(np.int64)
        self.node_threshold_ = np.where(tree.children_left >= 0, tree.threshold, np.nan)
        self.node_left_ = tree.children_left.astype(np.int64)
        self.node_right_ = tree.children_right.astype(np.int64)
        self.node_n_ = tree.n_node_samples.astype(np.int64)

    def _keep_reachable_nodes(self, payload_names: Sequence[str]) -> None:
        """Drop nodes no longer reachable from the root and renumber the rest in preorder (children after
        their parent, left subtree first, as scikit-learn numbers them)."""
        order: list[int] = []
        stack = [0]
        while stack:
            node = stack.pop()
            order.append(node)
            if self.node_feature_[node] >= 0:
                stack.extend([int(self.node_right_[node]), int(self.node_left_[node])])
        old = np.asarray(order, dtype=np.int64)
        new_id = np.full(len(self.node_feature_), -1, dtype=np.int64)
        new_id[old] = np.arange(len(old))
        internal = self.node_feature_[old] >= 0
        self.node_left_ = np.where(internal, new_id[self.node_left_[old]], -1)
        self.node_right_ = np.where(internal, new_id[self.node_right_[old]], -1)
        for name in ("node_feature_", "node_threshold_", "node_n_", *payload_names):
            setattr(self, name, getattr(self, name)[old])

    # -- traversal -----------------------------------------------------------------------------------------

    def _leaf_of(self, values: np.ndarray) -> np.ndarray:
        """Leaf node id per row; values are compared as float32, exactly like scikit-learn."""
        values = values.astype(np.float32).astype(np.float64)
        rows = np.arange(values.shape[0])
        node = np.zeros(values.shape[0], dtype=np.int64)
        for _ in range(MAX_RULE_DEPTH + 1):
            feature = self.node_feature_[node]
            internal = feature >= 0
            if not internal.any():
                break
            x = values[rows, np.where(internal, feature, 0)]
            go_left = x <= self.node_threshold_[node]
            child = np.where(go_left, self.node_left_[node], self.node_right_[node])
            node = np.where(internal, child, node)
        return node

    def apply(self, X: pd.DataFrame) -> np.ndarray:
        """Leaf node id of each customer (the ``leaf`` of :meth:`rules_json`)."""
        return self._leaf_of(self._matrix(X, f"{type(self).__name__}.apply"))

    @property
    def depth_(self) -> int:
        """Depth of the fitted tree (0 for a single leaf)."""
        check_is_fitted(self, "node_feature_")
        depth = np.zeros(len(self.node_feature_), dtype=np.int64)
        for node in range(len(depth)):  # children always have larger ids (preorder)
            if self.node_feature_[node] >= 0:
                depth[self.node_left_[node]] = depth[self.node_right_[node]] = depth[node] + 1
        return int(depth.max())

    @property
    def n_leaves_(self) -> int:
        check_is_fitted(self, "node_feature_")
        return int((self.node_feature_ < 0).sum())

    # -- rules ---------------------------------------------------------------------------------------------

    def _leaf_conditions(self) -> dict[int, list[dict[str, Any]]]:
        """Conditions of the path to each leaf, with repeated (feature, op) pairs merged to the tightest bound."""
        check_is_fitted(self, "node_feature_")
        paths: dict[int, list[tuple[int, str, float]]] = {}
        stack: list[tuple[int, list[tuple[int, str, float]]]] = [(0, [])]
        while stack:
            node, path = stack.pop()
            feature = int(self.node_feature_[node])
            if feature < 0:
                paths[node] = path
                continue
            threshold = float(self.node_threshold_[node])
            stack.append((int(self.node_right_[node]), [*path, (feature, ">", threshold)]))
            stack.append((int(self.node_left_[node]), [*path, (feature, "<=", threshold)]))
        return {leaf: self._merge_conditions(path) for leaf, path in sorted(paths.items())}

    def _merge_conditions(self, path: list[tuple[int, str, float]]) -> list[dict[str, Any]]:
        bounds: dict[tuple[int, str], float] = {}
        for feature, op, threshold in path:
            key = (feature, op)
            if key not in bounds:
                bounds[key] = threshold
            else:
                bounds[key] = min(bounds[key], threshold) if op == "<=" else max(bounds[key], threshold)
        conditions = []
        for (feature, op), threshold in bounds.items():
            name = self.features_[feature]
            fill = float(np.float32(self.fill_values_[name]))
            conditions.append(
                {
                    "feature": name,
                    "op": op,
                    "threshold": threshold,
                    "missing_satisfies": bool(fill <= threshold if op == "<=" else fill > threshold),
                }
            )
        return conditions

    @staticmethod
    def _conditions_text(conditions: list[dict[str, Any]]) -> str:
        """``IF a > 1 AND b > 2 and <= 5``: one clause per feature, both bounds of a range in one clause."""
        if not conditions:
            return "IF any customer"
        bounds_by_feature: dict[str, list[str]] = {}
        for c in conditions:
            bound = f"{c['op']} {format_threshold(c['feature'], c['threshold'])}"
            bounds_by_feature.setdefault(c["feature"], []).append(bound)
        clauses = [
            f"{describe_feature(feature)} {' and '.join(sorted(bounds, key=lambda b: b[0] != '>'))}"
            for feature, bounds in bounds_by_feature.items()
        ]
        return "IF " + " AND ".join(clauses)

    # -- nested JSON ---------------------------------------------------------------------------------------

    def _node_payload(self, node: int) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _node_dict(self, node: int) -> dict[str, Any]:
        out: dict[str, Any] = {"n": int(self.node_n_[node]), **self._node_payload(node)}
        if self.node_feature_[node] >= 0:
            out["feature"] = self.features_[self.node_feature_[node]]
            out["threshold"] = float(self.node_threshold_[node])
            out["left"] = self._node_dict(int(self.node_left_[node]))
            out["right"] = self._node_dict(int(self.node_right_[node]))
        return out

    def _export(self, extra: dict[str, Any]) -> dict[str, Any]:
        params = self.get_params()
        if params.get("features") is not None:
            params["features"] = list(params["features"])
        return {
            "model": self._model_name,
            "format_version": FORMAT_VERSION,
            "params": params,
            "features": list(self.features_),
            "fill_values": {c: float(v) for c, v in self.fill_values_.items()},
            "n_train": int(self.n_train_),
            **extra,
            "tree": self._node_dict(0),
        }

    @classmethod
    def _import(cls, data: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
        """Model with node arrays restored from :meth:`_export` output, plus each node's payload (preorder)."""
        if data.get("model") != cls._model_name:
            raise ValueError(f"not a {cls.__name__} export: model={data.get('model')!r}")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{cls.__name__} export format {data.get('format_version')!r} is not supported")
        params = dict(data["params"])
        if params.get("features") is not None:
            params["features"] = tuple(params["features"])
        model = cls(**params)
        model.features_ = list(data["features"])
        model.fill_values_ = {c: float(v) for c, v in data["fill_values"].items()}
        model.n_train_ = int(data["n_train"])
        index = {name: i for i, name in enumerate(model.features_)}
        feature, threshold, left, right, count, payloads = [], [], [], [], [], []

        def visit(node: dict[str, Any], depth: int) -> int:
            if depth > MAX_RULE_DEPTH:
                raise ValueError(f"{cls.__name__} export is deeper than {MAX_RULE_DEPTH}")
            node_id = len(feature)
            is_split = "feature" in node
            feature.append(index[node["feature"]] if is_split else -1)
            threshold.append(float(node["threshold"]) if is_split else np.nan)
            left.append(-1)
            right.append(-1)
            count.append(int(node["n"]))
            payloads.append(node)
            if is_split:
                left[node_id] = visit(node["left"], depth + 1)
                right[node_id] = visit(node["right"], depth + 1)
            return node_id

        visit(data["tree"], 0)
        model.node_feature_ = np.asarray(feature, dtype=np.int64)
        model.node_threshold_ = np.asarray(threshold, dtype=float)
        model.node_left_ = np.asarray(left, dtype=np.int64)
        model.node_right_ = np.asarray(right, dtype=np.int64)
        model.node_n_ = np.asarray(count, dtype=np.int64)
        return model, payloads


class SpendTree(RegressorMixin, _RulesTree):
    """A shallow regression tree predicting future spend in currency, with readable rules.

    Parameters
    ----------
    max_depth:
        Tree depth, 1 to :data:`MAX_RULE_DEPTH` (4); checked at fit (``ValueError``).
    min_samples_leaf:
        Smallest leaf: a count, or a fraction of the fit customers (default 1 %).
    target:
        What the splits are chosen on: ``"log1p"`` (signed log1p of spend: splits separate typical
        customers), ``"raw"`` (spend itself: splits chase the biggest spenders) or ``"auto"``: both are fit
        on a seeded 75 % of the rows and the one with the higher normalised Gini on the other 25 % wins
        (:func:`segml.evaluate.normalized_gini`, the comparison metric; ties, fewer than 80 rows, or no
        positive validation spend -> ``"log1p"``), then refit on all rows.
        Either way a leaf predicts the mean training spend of its customers, in currency.
    features:
        Input columns; default :func:`default_tree_features` (every numeric non-label column).
    random_state:
        Seed of the tree (tie-breaking between equal splits) and of the ``"auto"`` split.

    Attributes
    ----------
    target_ : str
        The target actually used (``"log1p"`` or ``"raw"``).
    target_selection_ : dict[str, float]
        Validation normalised Gini per target when ``target="auto"`` decided, else empty.
    estimator_ : DecisionTreeRegressor
        The fitted scikit-learn tree (absent after :meth:`from_dict`).
    """

    _model_name = "segml.models.tree.SpendTree"
    #: model-family interface (:class:`segml.models.base.ModelFamily`): predicts future spend in currency
    predicts_money: ClassVar[bool] = True
    #: registry family name written into :meth:`to_dict` (:mod:`segml.models.registry`)
    family: ClassVar[str] = "tree"

    def __init__(
        self,
        max_depth: int = 3,
        min_samples_leaf: int | float = 0.01,
        target: Literal["log1p", "raw", "auto"] = "auto",
        features: Sequence[str] | None = None,
        random_state: int | None = 42,
    ) -> None:
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.target = target
        self.features = features
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, y: Any) -> SpendTree:
        """Fit the tree on features ``X`` and future spend ``y`` (currency).

        Returns
        -------
        self
        """
        self._check_depth()
        if self.target not in ("log1p", "raw", "auto"):
            raise ValueError(f"SpendTree: target must be 'log1p', 'raw' or 'auto', got {self.target!r}")
        values = self._prepare_fit(X)
        spend = check_target(y, len(values), "SpendTree.fit")
        if self.target == "auto":
            self.target_, self.target_selection_ = self._choose_target(values, spend)
        else:
            self.target_, self.target_selection_ = self.target, {}
        estimator = self._regressor().fit(values, _transform_target(spend, self.target_))
        self.estimator_ = estimator
        self._store_nodes(estimator)
        if self.target_ == "raw":
            self.node_value_ = estimator.tree_.value[:, 0, 0].astype(float)  # the mean spend of each node
        else:
            membership = estimator.decision_path(values)  # rows x nodes, 1 on each row's path
            self.node_value_ = np.asarray(membership.T @ spend).ravel() / self.node_n_
        return self

    def _regressor(self) -> DecisionTreeRegressor:
        return DecisionTreeRegressor(
            max_depth=self.max_depth, min_samples_leaf=self.min_samples_leaf, random_state=self.random_state
        )

    def _choose_target(self, values: np.ndarray, spend: np.ndarray) -> tuple[str, dict[str, float]]:
        n_rows = len(spend)
        order = np.random.RandomState(self.random_state).permutation(n_rows)
        valid, train = order[: n_rows // 4], order[n_rows // 4 :]
        if n_rows < 80 or spend[valid].sum() <= 0:
            return "log1p", {}
        scores: dict[str, float] = {}
        for target in ("log1p", "raw"):
            estimator = self._regressor().fit(values[train], _transform_target(spend[train], target))
            train_leaves = estimator.apply(values[train])
            leaf_sum = np.bincount(train_leaves, weights=spend[train], minlength=estimator.tree_.node_count)
            leaf_n = np.bincount(train_leaves, minlength=estimator.tree_.node_count)
            leaf_mean = leaf_sum / np.maximum(leaf_n, 1)
            scores[target] = normalized_gini(spend[valid], leaf_mean[estimator.apply(values[valid])])
        best = "raw" if scores["raw"] > scores["log1p"] else "log1p"
        return best, scores

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Predicted future spend (currency): the mean training spend of each customer's leaf."""
        leaves = self._leaf_of(self._matrix(X, "SpendTree.predict"))
        return self.node_value_[leaves]

    def predict_value(self, X: pd.DataFrame) -> np.ndarray:
        """Model-family score: :meth:`predict` (future spend in currency)."""
        return self.predict(X)

    def rules_json(self) -> list[dict[str, Any]]:
        """One entry per leaf, highest predicted spend first.

        Returns
        -------
        ``[{"leaf", "conditions": [{"feature", "op", "threshold", "missing_satisfies"}], "value", "n",
        "share"}]`` where ``value`` is the predicted spend, ``n`` the fit customers in the leaf and
        ``share`` their share of all fit customers. A customer matches exactly one leaf.
        """
        rules = [
            {
                "leaf": leaf,
                "conditions": conditions,
                "value": float(self.node_value_[leaf]),
                "n": int(self.node_n_[leaf]),
                "share": float(self.node_n_[leaf] / self.n_train_),
            }
            for leaf, conditions in self._leaf_conditions().items()
        ]
        return sorted(rules, key=lambda rule: (-rule["value"], rule["leaf"]))

    def rules_text(self, currency: str = "USD") -> str:
        """One line per leaf, e.g. ``IF spend_365d > 120.50 AND recency_days <= 45 THEN expected future
        spend ≈ 310 USD (n=1,234, 5.2 % of customers)``; features in plain words when available."""
        return "\n".join(
            f"{self._conditions_text(rule['conditions'])} THEN expected future spend ≈ "
            f"{format_money(rule['value'])} {currency} (n={rule['n']:,}, {rule['share'] * 100:.1f} % of customers)"
            for rule in self.rules_json()
        )

    def _node_payload(self, node: int) -> dict[str, Any]:
        return {"value": float(self.node_value_[node])}

    def to_dict(self) -> dict[str, Any]:
        """The fitted tree as nested JSON-able dicts; :meth:`from_dict` predicts from it alone."""
        check_is_fitted(self, "node_feature_")
        state = self._export({"target": self.target_, "target_selection": dict(self.target_selection_)})
        return {"family": self.family, **state}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpendTree:
        """Rebuild a fitted :class:`SpendTree` from :meth:`to_dict` output."""
        model, payloads = cls._import(data)
        model.target_ = data["target"]
        model.target_selection_ = {k: float(v) for k, v in data["target_selection"].items()}
        model.node_value_ = np.asarray([float(p["value"]) for p in payloads])
        return model


class GradeRulesTree(ClassifierMixin, _RulesTree):
    """A shallow classification tree distilled from final grades: readable rules and their fidelity.

    Parameters
    ----------
    max_depth:
        Tree depth, 1 to :data:`MAX_RULE_DEPTH` (4); checked at fit (``ValueError``).
    min_samples_leaf:
        Smallest leaf: a count, or a fraction of the fit customers (default 1 %).
    class_weight:
        Passed to scikit-learn (``"balanced"`` favours recall of small grades such as A).
    merge_same_grade_leaves:
        Replace a split whose two leaves give the same grade by one leaf (repeatedly, bottom-up): fewer,
        shorter rules with exactly the same predictions.
    features:
        Input columns; default :func:`default_tree_features`.
    random_state:
        Seed of the tree (tie-breaking between equal splits).

    Attributes
    ----------
    classes_ : ndarray
        Grades seen at fit, sorted.
    estimator_ : DecisionTreeClassifier
        The fitted scikit-learn tree before leaves are merged (absent after :meth:`from_dict`).
    fidelity_ : dict
        ``{"accuracy": share of fit customers whose rule grade equals their grade, "recall": {grade: share
        of that grade's customers the rules grade correctly}, "n": customers}``.
    """

    _model_name = "segml.models.tree.GradeRulesTree"

    def __init__(
        self,
        max_depth: int = 4,
        min_samples_leaf: int | float = 0.01,
        class_weight: dict[str, float] | Literal["balanced"] | None = None,
        merge_same_grade_leaves: bool = True,
        features: Sequence[str] | None = None,
        random_state: int | None = 42,
    ) -> None:
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.class_weight = class_weight
        self.merge_same_grade_leaves = merge_same_grade_leaves
        self.features = features
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, grades: Any) -> GradeRulesTree:
        """Fit rules that reproduce ``grades`` (one grade label per row of ``X``) from the features.

        Returns
        -------
        self
        """
        self._check_depth()
        values = self._prepare_fit(X)
        labels = pd.Series(np.asarray(grades, dtype=object).reshape(-1))
        if len(labels) != len(values):
            raise ValueError(f"GradeRulesTree.fit: {len(labels):,} grades for {len(values):,} feature rows")
        if labels.isna().any():
            raise ValueError(
                f"GradeRulesTree.fit: {int(labels.isna().sum()):,} missing grades of {len(labels):,}"
            )
        labels = labels.astype(str).to_numpy()
        estimator = DecisionTreeClassifier(
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            class_weight=self.class_weight,
            random_state=self.random_state,
        ).fit(values, labels)
        self.estimator_ = estimator
        self.classes_ = estimator.classes_
        self._store_nodes(estimator)
        # the grade scikit-learn predicts in each node (weighted majority, first grade on ties)
        self.node_grade_index_ = estimator.tree_.value[:, 0, :].argmax(axis=1).astype(np.int64)
        membership = estimator.decision_path(values)
        one_hot = (labels[:, None] == self.classes_[None, :]).astype(float)
        self.node_counts_ = np.rint(np.asarray(membership.T @ one_hot)).astype(np.int64)
        if self.merge_same_grade_leaves:
            self._merge_same_grade_leaves()
        predicted = self.classes_[self.node_grade_index_[self._leaf_of(values)]]
        correct = predicted == labels
        self.fidelity_ = {
            "accuracy": float(correct.mean()),
            "recall": {str(g): float(correct[labels == g].mean()) for g in self.classes_},
            "n": int(len(labels)),
        }
        return self

    def _merge_same_grade_leaves(self) -> None:
        # children have larger ids than their parent: walking ids downwards merges bottom-up
        for node in range(len(self.node_feature_) - 1, -1, -1):
            left, right = int(self.node_left_[node]), int(self.node_right_[node])
            if (
                self.node_feature_[node] >= 0
                and self.node_feature_[left] < 0
                and self.node_feature_[right] < 0
                and self.node_grade_index_[left] == self.node_grade_index_[right]
            ):
                self.node_grade_index_[node] = self.node_grade_index_[left]
                self.node_feature_[node] = -1
                self.node_threshold_[node] = np.nan
                self.node_left_[node] = self.node_right_[node] = -1
        self._keep_reachable_nodes(["node_grade_index_", "node_counts_"])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The rule grade of each customer."""
        leaves = self._leaf_of(self._matrix(X, "GradeRulesTree.predict"))
        return self.classes_[self.node_grade_index_[leaves]]

    def rules_json(self) -> list[dict[str, Any]]:
        """One entry per leaf, best grade first, then largest leaf first.

        Returns
        -------
        ``[{"leaf", "conditions", "grade", "n", "share", "purity", "counts"}]``: ``purity`` is the share of
        the leaf's fit customers whose grade is the rule's grade; ``counts`` their number per grade.
        """
        rules = []
        for leaf, conditions in self._leaf_conditions().items():
            counts = self.node_counts_[leaf]
            grade_index = int(self.node_grade_index_[leaf])
            n = int(self.node_n_[leaf])
            rules.append(
                {
                    "leaf": leaf,
                    "conditions": conditions,
                    "grade": str(self.classes_[grade_index]),
                    "n": n,
                    "share": float(n / self.n_train_),
                    "purity": float(counts[grade_index] / n) if n else float("nan"),
                    "counts": {str(g): int(c) for g, c in zip(self.classes_, counts, strict=True)},
                }
            )
        return sorted(rules, key=lambda rule: (rule["grade"], -rule["n"], rule["leaf"]))

    def rules_text(self) -> str:
        """One line per leaf: ``IF … THEN grade B (n=1,234, 87 % of these customers are B)``."""
        return "\n".join(
            f"{self._conditions_text(rule['conditions'])} THEN grade {rule['grade']} "
            f"(n={rule['n']:,}, {rule['purity'] * 100:.0f} % of these customers are {rule['grade']})"
            for rule in self.rules_json()
        )

    def _node_payload(self, node: int) -> dict[str, Any]:
        counts = self.node_counts_[node]
        return {
            "grade": str(self.classes_[self.node_grade_index_[node]]),
            "counts": {str(g): int(c) for g, c in zip(self.classes_, counts, strict=True)},
        }

    def to_dict(self) -> dict[str, Any]:
        """The fitted tree as nested JSON-able dicts; :meth:`from_dict` predicts from it alone."""
        check_is_fitted(self, "node_feature_")
        return self._export({"classes": [str(g) for g in self.classes_], "fidelity": self.fidelity_})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GradeRulesTree:
        """Rebuild a fitted :class:`GradeRulesTree` from :meth:`to_dict` output."""
        model, payloads = cls._import(data)
        model.classes_ = np.asarray(data["classes"], dtype=object)
        position = {g: i for i, g in enumerate(data["classes"])}
        model.node_grade_index_ = np.asarray([position[p["grade"]] for p in payloads], dtype=np.int64)
        model.node_counts_ = np.asarray(
            [[int(p["counts"][g]) for g in data["classes"]] for p in payloads], dtype=np.int64
        )
        model.fidelity_ = data["fidelity"]
        return model


def _transform_target(spend: np.ndarray, target: str) -> np.ndarray:
    return signed_log1p(spend) if target == "log1p" else spend
