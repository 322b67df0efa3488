"""The feature catalog: one entry per column of the customer feature table, read by every module that needs to
know what a column is.

An entry says what a column *is* (``kind``, ``role``), how it is put into words (``description`` and the
reason-code ``wording``), how a model prepares it (``fill`` for missing values, ``transform`` before distances)
and whether the potential-value model removes the season from it (``seasonality``). Readers:

* :mod:`segml.features` — ``NUMERIC_FEATURES`` (the model-ready columns, in catalog order), the
  trailing-window name pattern, ``describe_feature``;
* :mod:`segml.models.clustering` and :mod:`segml.models.tree` — kind, missing-value fill, log transform,
  threshold rounding, the columns that are never model inputs;
* :mod:`segml.models.potential` — the columns that are never model inputs, the seasonal window pattern and
  the history totals it deseasonalises;
* :mod:`segml.explain` — the wording of reason codes;
* notebooks and reports — :func:`key_features` (the short profile list) and :func:`drift_features` (the
  columns monitored for drift).

Windowed families
-----------------
``spend_{w}d`` and ``orders_{w}d`` are one entry each (a :class:`WindowFamily`); :func:`entries` expands them
for the windows of a :class:`~segml.config.FeatureConfig` and :func:`entry` recognises any window
(``spend_45d``), so a window list such as Ta Feng's ``[7, 30, 60]`` needs no catalog change.

Margin features
---------------
``margin_total``, ``margin_{w}d`` and ``margin_rate`` exist only when the clean transactions carry ``margin``
(a ``cost`` or ``margin`` role is mapped): their entries have ``requires="margin"`` and :func:`entries` /
:func:`numeric_features` list them only with ``with_margin=True``, so a table built without margin has
exactly the columns it had before the margin roles existed.

Invoice features
----------------
``invoices_n``, ``days_late_mean``, ``paid_on_time_share``, ``outstanding_amount``, ``overdue_amount`` and
``days_late_trend`` exist only when the experiment has a ``data.invoices`` file (``requires="invoices"``,
listed only with ``with_invoices=True``), in the same way.

Interaction features
--------------------
``interactions_90d``, ``complaints_90d``, ``complaints_365d``, ``complaint_rate``, ``complaints_trend``,
``tickets_90d``, ``campaign_sends_365d``, ``campaign_responses_365d``, ``response_rate``, ``visits_90d``,
``days_since_interaction``, ``days_since_complaint`` and ``score_mean`` exist only when the experiment has a
``data.interactions`` file (``requires="interactions"``, listed only with ``with_interactions=True``). Their
windows are fixed (90 and 365 days, the trend over ``features.trend_window``): they are not window families.

Customer attributes
-------------------
Attribute columns come from the customers file under the user's own names (``industry``, ``org type``, …),
so the catalog cannot list them. Any name the catalog does not know is an *attribute*: :func:`entry` builds
its entry on the fly with ``role="attribute"`` and the kind taken from the column's dtype —
``"categorical"`` for strings, objects and categories (what :func:`segml.features.build_features` produces:
attributes are always text there), ``"numeric"`` for numbers and booleans (a column a caller added to the
frame). Without a dtype an unknown name is taken as ``"numeric"``: the callers that ask by name only
(clustering, trees) read numeric columns only. Attribute entries are filled with the fit median, never
transformed, described as "customer attribute '<name>'" and worded as ``<name> = <value>`` (categorical) or
``<name>: <value>, median is …`` (numeric).

Adding a feature
----------------
Write its SQL in :mod:`segml.features`, then add one :class:`FeatureEntry` (or :class:`WindowFamily`) to
``_CATALOG`` below, at the place the column should take in ``NUMERIC_FEATURES``. ``tests/test_catalog.py``
fails while a built column has no entry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import pandas as pd

from segml.config import FeatureConfig

__all__ = [
    "FeatureEntry",
    "WindowFamily",
    "Wording",
    "describe",
    "descriptions",
    "drift_features",
    "entries",
    "entry",
    "fill_rule",
    "history_totals",
    "is_catalogued",
    "key_features",
    "kind",
    "label_columns",
    "non_feature_columns",
    "numeric_features",
    "redundant_columns",
    "seasonal_window_pattern",
    "transform",
    "uncatalogued",
    "window_days",
    "window_pattern",
]

#: what a column measures; decides fill, transform, rounding and the default wording
Kind = Literal["id", "date", "money", "count", "days", "ratio", "share", "flag", "categorical", "numeric"]
#: what a column is for: identifiers, the cutoff, model features, customer attributes, training labels
Role = Literal["id", "cutoff", "feature", "attribute", "label"]
#: missing-value rule: the largest value seen at fit (no history = most lapsed), 0, the fit median, none
Fill = Literal["max", "zero", "median", "none"]
#: transform before distance-based models (clustering) and log-target trees
Transform = Literal["signed_log1p", "none"]
#: how the potential-value model removes the season: over the column's trailing window, over the
#: customer's whole history (since the first purchase), or not at all
Seasonality = Literal["window", "history", "none"]

#: the optional input a column needs: ``margin`` (clean transactions with a margin column), ``invoices``
#: (a ``data.invoices`` file) or ``interactions`` (a ``data.interactions`` file)
Requires = Literal["margin", "invoices", "interactions"]

#: kinds whose values are amounts or counts: heavy-tailed, log-transformed before clustering
_LOG_KINDS = frozenset({"money", "count"})
#: default fill per kind (entries may override, e.g. the lapse columns fill with the fit maximum)
_DEFAULT_FILL: dict[str, Fill] = {
    "money": "zero",
    "count": "zero",
    "days": "zero",
    "ratio": "zero",
    "share": "zero",
    "flag": "zero",
    "numeric": "median",
    "categorical": "none",
    "id": "none",
    "date": "none",
}


@dataclass(frozen=True)
class Wording:
    """How a reason code puts a feature into words.

    ``style`` picks the renderer of :mod:`segml.explain` (``money``, ``count``, ``days``, ``percent``,
    ``months``, ``binary``, ``trend``, ``times``, ``category``, ``generic``); ``before`` / ``after`` frame the
    number (for ``binary``: the text when true / when false). In a :class:`WindowFamily`, ``{w}`` stands for
    the window length.
    """

    style: str
    before: str = ""
    after: str = ""


@dataclass(frozen=True)
class FeatureEntry:
    """One column of the feature table (or of a training frame).

    Attributes
    ----------
    name:
        Column name.
    kind:
        What it measures (see :data:`Kind`).
    role:
        ``feature`` (model input), ``id``, ``cutoff``, ``label`` (training frames only) or ``attribute``.
    description:
        Plain words, used in rules, reports and the artifact's feature spec.
    wording:
        Reason-code wording; None for columns that are never reasons (ids, cutoffs, labels).
    fill:
        Missing-value rule; None = the kind's default (:data:`_DEFAULT_FILL`).
    transform:
        None = the kind's default (``signed_log1p`` for money and counts).
    seasonality:
        ``window`` / ``history`` / ``none`` (see :data:`Seasonality`).
    numeric:
        Listed in ``NUMERIC_FEATURES`` (float64, model-ready). False for ``has_purchases``, whose information
        ``n_purchase_days > 0`` already carries, and for non-features.
    key:
        In the short profile list (:func:`key_features`).
    drift:
        Monitored for drift (:func:`drift_features`).
    window:
        Window length in days for an expanded :class:`WindowFamily` member, else None.
    family:
        Stem of the :class:`WindowFamily` (``"spend"``) for its members, else None.
    requires:
        ``"margin"`` for the columns built only when the clean transactions carry ``margin``, ``"invoices"``
        for those built only from a ``data.invoices`` file, ``"interactions"`` for those built only from a
        ``data.interactions`` file, else None.
    """

    name: str
    kind: Kind
    role: Role
    description: str
    wording: Wording | None = None
    fill: Fill | None = None
    transform: Transform | None = None
    seasonality: Seasonality = "none"
    numeric: bool = True
    key: bool = False
    drift: bool = False
    window: int | None = None
    family: str | None = None
    requires: Requires | None = None

    @property
    def fill_rule(self) -> Fill:
        """The missing-value rule in force (the entry's own or its kind's default)."""
        return self.fill or _DEFAULT_FILL.get(self.kind, "median")

    @property
    def transform_rule(self) -> Transform:
        """The transform in force (the entry's own or its kind's default)."""
        if self.transform is not None:
            return self.transform
        return "signed_log1p" if self.kind in _LOG_KINDS else "none"


@dataclass(frozen=True)
class WindowFamily:
    """Trailing-window features ``<stem>_<w>d``, one member per window of ``features.windows``.

    ``description`` and the wording's ``before`` / ``after`` hold ``{w}`` for the window length.
    ``key_windows`` / ``drift_windows`` name the members in :func:`key_features` / :func:`drift_features`;
    when the feature table has none of them (other windows configured), its longest window stands in.
    """

    stem: str
    kind: Kind
    description: str
    wording: Wording
    seasonality: Seasonality = "none"
    key_windows: tuple[int, ...] = ()
    drift_windows: tuple[int, ...] = ()
    requires: Requires | None = None

    def name(self, window: int) -> str:
        return f"{self.stem}_{int(window)}d"

    def member(self, window: int) -> FeatureEntry:
        w = int(window)
        return FeatureEntry(
            name=self.name(w),
            kind=self.kind,
            role="feature",
            description=self.description.format(w=w),
            wording=replace(
                self.wording, before=self.wording.before.format(w=w), after=self.wording.after.format(w=w)
            ),
            seasonality=self.seasonality,
            key=w in self.key_windows,
            drift=w in self.drift_windows,
            window=w,
            family=self.stem,
            requires=self.requires,
        )


def _feature(name: str, kind: Kind, description: str, wording: Wording, **more: Any) -> FeatureEntry:
    return FeatureEntry(
        name=name, kind=kind, role="feature", description=description, wording=wording, **more
    )


# --------------------------------------------------------------------------------------------------------------
# The catalog. Order matters: the features with ``numeric=True`` appear in NUMERIC_FEATURES in this order (the
# model matrices of the potential model and the trees follow it), windowed families expanded in place.

_CATALOG: tuple[FeatureEntry | WindowFamily, ...] = (
    FeatureEntry("customer_id", "id", "id", "customer id as in the data", numeric=False),
    FeatureEntry(
        "as_of", "date", "cutoff", "the cutoff date (inclusive) the features describe", numeric=False
    ),
    _feature(
        "has_purchases",
        "flag",
        "bought at least once on or before the cutoff",
        Wording("binary", "has bought before", "has not bought yet"),
        numeric=False,  # same information as n_purchase_days > 0
    ),
    _feature(
        "recency_days",
        "days",
        "days since the last purchase day",
        Wording("days", "last purchase ", " days ago"),
        fill="max",
        key=True,
        drift=True,
    ),
    _feature(
        "t_days",
        "days",
        "days since the first purchase day (customer age, BTYD 'T')",
        Wording("days", "first purchase ", " days ago"),
    ),
    _feature(
        "btyd_recency_days",
        "days",
        "days between the first and the last purchase day (BTYD 'recency')",
        Wording("days", "", " days between first and last purchase"),
    ),
    _feature(
        "frequency",
        "count",
        "number of repeat purchase days (distinct purchase days minus one)",
        Wording("count", "", " repeat purchase days"),
        seasonality="history",
        key=True,
        drift=True,
    ),
    _feature(
        "btyd_monetary",
        "money",
        "mean net spend of the repeat purchase days (first day excluded)",
        Wording("money", "repeat purchase days average ", ""),
    ),
    _feature(
        "n_purchase_days",
        "count",
        "number of distinct days with a purchase",
        Wording("count", "bought on ", " different days"),
        seasonality="history",
    ),
    _feature(
        "n_orders",
        "count",
        "number of distinct orders",
        Wording("count", "", " orders"),
        seasonality="history",
        key=True,
        drift=True,
    ),
    _feature(
        "tenure_days",
        "days",
        "days since signup (or since the first purchase when no signup date is known)",
        Wording("days", "customer for ", " days"),
        key=True,
        drift=True,
    ),
    _feature(
        "monetary_total",
        "money",
        "net spend to date (purchases minus returns)",
        Wording("money", "net spend to date is ", ""),
        seasonality="history",
        key=True,
        drift=True,
    ),
    _feature(
        "gross_spend",
        "money",
        "spend to date before returns",
        Wording("money", "gross spend to date is ", ""),
        seasonality="history",
    ),
    _feature(
        "return_amount",
        "money",
        "value returned to date",
        Wording("money", "returned goods worth ", ""),
        seasonality="history",
    ),
    _feature(
        "returns_rate",
        "share",
        "share of gross spend that was returned",
        Wording("percent", "returned ", " of gross spend"),
    ),
    _feature(
        "monetary_mean",
        "money",
        "average net spend per purchase day",
        Wording("money", "spends ", " per purchase day"),
        key=True,
        drift=True,
    ),
    _feature(
        "monetary_max",
        "money",
        "largest net spend on one day",
        Wording("money", "largest purchase day was ", ""),
    ),
    _feature(
        "interpurchase_mean_days",
        "days",
        "average days between purchase days",
        Wording("days", "buys every ", " days on average"),
        fill="max",
        key=True,
    ),
    _feature(
        "interpurchase_std_days",
        "days",
        "variability (standard deviation) of days between purchase days",
        Wording("days", "gaps between purchases vary by ", " days"),
        fill="max",
    ),
    WindowFamily(
        "spend",
        "money",
        "net spend in the last {w} days",
        Wording("money", "spent ", " in the last {w} days"),
        seasonality="window",
        key_windows=(90, 365),
        drift_windows=(90, 365),
    ),
    WindowFamily(
        "orders",
        "count",
        "number of purchase days in the last {w} days",
        Wording("count", "bought on ", " days in the last {w} days"),
        seasonality="window",
        drift_windows=(365,),
    ),
    _feature(
        "trend_ratio",
        "ratio",
        "spend trend: recent period versus the period before (log ratio, > 0 = growing)",
        Wording("trend"),
        key=True,
        drift=True,
    ),
    _feature(
        "active_months_share",
        "share",
        "share of recent calendar months with a purchase",
        Wording("months"),
        key=True,
        drift=True,
    ),
    _feature(
        "repurchase",
        "flag",
        "has bought on more than one day",
        Wording("binary", "has bought again after the first purchase", "has not bought again yet"),
    ),
    _feature(
        "product_breadth",
        "count",
        "number of distinct products bought",
        Wording("count", "bought ", " different products"),
    ),
    _feature(
        "quantity_total",
        "count",
        "number of units bought, net of returns",
        Wording("count", "bought ", " units in total"),
        seasonality="history",
    ),
    _feature(
        "churn_risk_ratio",
        "ratio",
        "days since last purchase relative to the customer's usual gap (> 1 = overdue)",
        Wording("times", "time since last purchase is ", " the usual gap between purchases"),
        fill="max",
        key=True,
        drift=True,
    ),
    # built only when the clean transactions carry margin (a cost or margin role is mapped)
    _feature(
        "margin_total",
        "money",
        "margin to date (spend minus cost, returns netted; may be negative)",
        Wording("money", "margin to date is ", ""),
        seasonality="history",
        requires="margin",
    ),
    WindowFamily(
        "margin",
        "money",
        "margin (spend minus cost, returns netted) in the last {w} days",
        Wording("money", "earned a margin of ", " in the last {w} days"),
        seasonality="window",
        requires="margin",
    ),
    _feature(
        "margin_rate",
        "ratio",
        "margin to date as a share of gross spend to date (missing without spend)",
        Wording("percent", "margin is ", " of gross spend"),
        fill="median",
        requires="margin",
    ),
    # built only from an invoices file (data.invoices), strictly as known at the cutoff: an invoice counts once
    # issued on or before the cutoff, and one paid after the cutoff is open at the cutoff
    _feature(
        "invoices_n",
        "count",
        "number of invoices issued on or before the cutoff",
        Wording("count", "", " invoices issued"),
        requires="invoices",
    ),
    _feature(
        "days_late_mean",
        "days",
        "average days paid after the due date (0 when on time), over invoices paid by the cutoff",
        Wording("days", "pays invoices ", " days late on average"),
        fill="median",
        requires="invoices",
    ),
    _feature(
        "paid_on_time_share",
        "share",
        "share of invoices due by the cutoff that were paid by their due date",
        Wording("percent", "paid ", " of due invoices on time"),
        fill="median",
        requires="invoices",
    ),
    _feature(
        "outstanding_amount",
        "money",
        "amount of invoices issued by the cutoff and not paid by it",
        Wording("money", "has unpaid invoices worth ", ""),
        requires="invoices",
    ),
    _feature(
        "overdue_amount",
        "money",
        "amount of unpaid invoices whose due date is before the cutoff",
        Wording("money", "has overdue invoices worth ", ""),
        requires="invoices",
    ),
    _feature(
        "days_late_trend",
        "days",
        "days late of invoices paid in the recent period minus that of invoices paid before it (> 0 = paying "
        "later)",
        Wording("days", "pays ", " days later than before (negative = earlier)"),
        fill="zero",
        requires="invoices",
    ),
    # built only from an interactions file (data.interactions), strictly from events on or before the cutoff
    # day; counts are 0 for customers without events, rates and means missing without their denominator
    _feature(
        "interactions_90d",
        "count",
        "interaction events of any kind in the last 90 days",
        Wording("count", "had ", " contacts in 90 days"),
        requires="interactions",
    ),
    _feature(
        "complaints_90d",
        "count",
        "complaints in the last 90 days",
        Wording("count", "complained ", " times in 90 days"),
        requires="interactions",
    ),
    _feature(
        "complaints_365d",
        "count",
        "complaints in the last 365 days",
        Wording("count", "complained ", " times in 365 days"),
        requires="interactions",
    ),
    _feature(
        "complaint_rate",
        "ratio",
        "complaints in the last 365 days per purchase day in the last 365 days (missing without purchases then)",
        Wording("count", "", " complaints per order in 365 days"),
        fill="median",
        requires="interactions",
    ),
    _feature(
        "complaints_trend",
        "numeric",
        "complaints in the recent period (features.trend_window days) minus those in the period before it "
        "(> 0 = complaining more)",
        Wording("count", "complains ", " times more than in the period before (negative = fewer)"),
        fill="zero",
        requires="interactions",
    ),
    _feature(
        "tickets_90d",
        "count",
        "support tickets in the last 90 days",
        Wording("count", "opened ", " support tickets in 90 days"),
        requires="interactions",
    ),
    _feature(
        "campaign_sends_365d",
        "count",
        "campaign messages sent to the customer in the last 365 days",
        Wording("count", "was sent ", " campaigns in 365 days"),
        requires="interactions",
    ),
    _feature(
        "campaign_responses_365d",
        "count",
        "campaign responses in the last 365 days",
        Wording("count", "responded to campaigns ", " times in 365 days"),
        requires="interactions",
    ),
    _feature(
        "response_rate",
        "ratio",
        "campaign responses per campaign sent in the last 365 days (missing without sends)",
        Wording("percent", "responded to ", " of campaigns sent in 365 days"),
        fill="median",
        requires="interactions",
    ),
    _feature(
        "visits_90d",
        "count",
        "logins and visits in the last 90 days",
        Wording("count", "visited ", " times in 90 days"),
        requires="interactions",
    ),
    _feature(
        "days_since_interaction",
        "days",
        "days since the last interaction event of any kind (missing without events)",
        Wording("days", "last contact ", " days ago"),
        fill="max",
        requires="interactions",
    ),
    _feature(
        "days_since_complaint",
        "days",
        "days since the last complaint (missing without complaints)",
        Wording("days", "last complaint ", " days ago"),
        fill="max",
        requires="interactions",
    ),
    _feature(
        "score_mean",
        "numeric",
        "mean score of survey events in the last 365 days (missing without surveys)",
        Wording("count", "mean survey score is ", ""),
        fill="median",
        requires="interactions",
    ),
    # training frames only (segml.features.training_frame): the row's cutoff and its labels
    FeatureEntry("cutoff", "date", "cutoff", "the cutoff of a training row (equal to as_of)", numeric=False),
    FeatureEntry(
        "future_spend", "money", "label", "net spend in the label window after the cutoff", numeric=False
    ),
    FeatureEntry(
        "future_orders", "count", "label", "purchase days in the label window after the cutoff", numeric=False
    ),
    FeatureEntry(
        "future_active",
        "flag",
        "label",
        "bought in the label window after the cutoff (1.0 / 0.0)",
        numeric=False,
    ),
    FeatureEntry("label_days", "days", "label", "observed length of the label window in days", numeric=False),
    FeatureEntry(
        "future_margin",
        "money",
        "label",
        "net margin in the label window after the cutoff (unclipped)",
        numeric=False,
        requires="margin",
    ),
)

_FIXED: dict[str, FeatureEntry] = {e.name: e for e in _CATALOG if isinstance(e, FeatureEntry)}
_FAMILIES: dict[str, WindowFamily] = {f.stem: f for f in _CATALOG if isinstance(f, WindowFamily)}


def _family_pattern(families: Iterable[WindowFamily]) -> re.Pattern[str]:
    stems = "|".join(re.escape(f.stem) for f in families)
    return re.compile(rf"^({stems})_(\d+)d$")


_WINDOW_PATTERN = _family_pattern(_FAMILIES.values())
#: catalog position of each fixed entry and window family (by stem)
_INDEX: dict[str, int] = {
    (item.stem if isinstance(item, WindowFamily) else item.name): i for i, item in enumerate(_CATALOG)
}


def window_pattern() -> re.Pattern[str]:
    """Regex of every trailing-window column name: group 1 the family stem, group 2 the window in days
    (``^(spend|orders|margin)_(\\d+)d$``)."""
    return _WINDOW_PATTERN


def seasonal_window_pattern() -> re.Pattern[str]:
    """Regex of the window columns the potential model deseasonalises over their own window (same groups as
    :func:`window_pattern`)."""
    return _family_pattern(f for f in _FAMILIES.values() if f.seasonality == "window")


# --------------------------------------------------------------------------------------------------------------
# Lookups


def entries(
    spec: FeatureConfig | None = None,
    *,
    with_margin: bool = False,
    with_invoices: bool = False,
    with_interactions: bool = False,
) -> list[FeatureEntry]:
    """Every catalog entry in catalog order, window families expanded for ``spec.windows`` (default
    :class:`~segml.config.FeatureConfig`); the margin entries only ``with_margin``, the invoice entries only
    ``with_invoices``, the interaction entries only ``with_interactions``."""
    windows = list((spec or FeatureConfig()).windows)
    out: list[FeatureEntry] = []
    for item in _CATALOG:
        if item.requires == "margin" and not with_margin:
            continue
        if item.requires == "invoices" and not with_invoices:
            continue
        if item.requires == "interactions" and not with_interactions:
            continue
        if isinstance(item, WindowFamily):
            out.extend(item.member(w) for w in windows)
        else:
            out.append(item)
    return out


def _attribute_kind(dtype: Any) -> Kind:
    if dtype is None:
        return "numeric"
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
        return "numeric"
    return "categorical"


def is_catalogued(name: str) -> bool:
    """True when ``name`` has a catalog entry (any window of a window family counts)."""
    return name in _FIXED or _WINDOW_PATTERN.match(name) is not None


def entry(name: str, dtype: Any = None) -> FeatureEntry:
    """The entry of a column: a catalog entry, a window-family member (any window) or, for any other name,
    a customer-attribute entry whose kind comes from ``dtype`` (see the module docstring).

    Parameters
    ----------
    name:
        Column name.
    dtype:
        The column's dtype (or a Series); only used for names the catalog does not know.
    """
    found = _FIXED.get(name)
    if found is not None:
        return found
    match = _WINDOW_PATTERN.match(name)
    if match:
        return _FAMILIES[match.group(1)].member(int(match.group(2)))
    if isinstance(dtype, pd.Series):
        dtype = dtype.dtype
    attribute_kind = _attribute_kind(dtype)
    return FeatureEntry(
        name=name,
        kind=attribute_kind,
        role="attribute",
        description=f"customer attribute '{name}'",
        wording=Wording("category" if attribute_kind == "categorical" else "generic"),
        numeric=False,
    )


def kind(name: str, dtype: Any = None) -> Kind:
    """The :data:`Kind` of a column (attributes: from ``dtype``)."""
    return entry(name, dtype).kind


def describe(name: str) -> str:
    """Plain-words description of any column (attributes: "customer attribute '<name>'")."""
    return entry(name).description


def fill_rule(name: str, dtype: Any = None) -> Fill:
    """Missing-value rule of a column: ``max``, ``zero``, ``median`` or ``none``."""
    return entry(name, dtype).fill_rule


def transform(name: str, dtype: Any = None) -> Transform:
    """Transform of a column before distance-based models: ``signed_log1p`` or ``none``."""
    return entry(name, dtype).transform_rule


def window_days(name: str) -> int | None:
    """Window length of a trailing-window column (``spend_90d`` → 90), else None."""
    match = _WINDOW_PATTERN.match(name)
    return int(match.group(2)) if match else None


def descriptions(
    spec: FeatureConfig | None = None,
    *,
    with_margin: bool = False,
    with_invoices: bool = False,
    with_interactions: bool = False,
) -> dict[str, str]:
    """``{column: description}`` of every catalog column for ``spec``'s windows (margin ones ``with_margin``,
    invoice ones ``with_invoices``, interaction ones ``with_interactions``)."""
    chosen = entries(
        spec, with_margin=with_margin, with_invoices=with_invoices, with_interactions=with_interactions
    )
    return {e.name: e.description for e in chosen}


def numeric_features(
    spec: FeatureConfig | None = None,
    *,
    with_margin: bool = False,
    with_invoices: bool = False,
    with_interactions: bool = False,
) -> list[str]:
    """The model-ready numeric feature columns in catalog order (``segml.features.NUMERIC_FEATURES``); the
    margin features only ``with_margin`` (clean transactions with a ``margin`` column), the invoice features
    only ``with_invoices`` (a ``data.invoices`` file), the interaction features only ``with_interactions``
    (a ``data.interactions`` file)."""
    chosen = entries(
        spec, with_margin=with_margin, with_invoices=with_invoices, with_interactions=with_interactions
    )
    return [e.name for e in chosen if e.role == "feature" and e.numeric]


def label_columns() -> tuple[str, ...]:
    """Label columns of every training frame, in order (``future_spend, future_orders, future_active,
    label_days``); :data:`MARGIN_LABEL` comes on top when the transactions carry margin."""
    return tuple(e.name for e in _FIXED.values() if e.role == "label" and e.requires is None)


#: the margin label of training frames built from transactions with a margin (not in :func:`label_columns`:
#: present only then)
MARGIN_LABEL = "future_margin"


def non_feature_columns() -> frozenset[str]:
    """Columns that are never model inputs: identifiers, cutoffs and labels (the margin label included)."""
    return frozenset(e.name for e in _FIXED.values() if e.role in ("id", "cutoff", "label"))


def redundant_columns() -> frozenset[str]:
    """Feature columns left out of ``NUMERIC_FEATURES`` because another column carries their information
    (``has_purchases``); the trees skip them, the potential model reads them."""
    return frozenset(e.name for e in _FIXED.values() if e.role == "feature" and not e.numeric)


def history_totals() -> tuple[str, ...]:
    """Columns accumulated over the customer's whole history, deseasonalised since the first purchase."""
    return tuple(e.name for e in _FIXED.values() if e.seasonality == "history")


def _flagged(columns: Iterable[Any], flag: str) -> list[str]:
    present = [str(c) for c in columns]
    wanted: set[str] = set()
    by_family: dict[str, list[int]] = {}
    for name in present:
        if not is_catalogued(name):
            continue
        item = entry(name)
        if item.family is not None and item.window is not None:
            by_family.setdefault(item.family, []).append(item.window)
        elif getattr(item, flag):
            wanted.add(name)
    for stem, windows in by_family.items():
        family = _FAMILIES[stem]
        listed = family.key_windows if flag == "key" else family.drift_windows
        if not listed:
            continue
        chosen = [w for w in windows if w in listed] or [max(windows)]
        wanted.update(family.name(w) for w in chosen)
    return sorted((c for c in present if c in wanted), key=_position)


def _position(name: str) -> tuple[int, int]:
    """Sort key of a catalogued column: its place in the catalog, then its window."""
    match = _WINDOW_PATTERN.match(name)
    if match:
        return _INDEX[match.group(1)], int(match.group(2))
    return _INDEX.get(name, len(_INDEX)), 0


def key_features(columns: Iterable[Any]) -> list[str]:
    """The short list of features that profile a customer (notebook and report tables), among ``columns``,
    in catalog order.

    Recency, frequency, orders, tenure, net and mean spend, purchase gap, spend over 90 and 365 days, trend,
    active-month share, churn risk. A window family whose listed windows are not in ``columns`` is
    represented by its longest window present.
    """
    return _flagged(columns, "key")


def drift_features(columns: Iterable[Any]) -> list[str]:
    """The features monitored for drift (PSI) among ``columns``, in catalog order: as :func:`key_features`
    but with the 365-day purchase-day count instead of the mean purchase gap."""
    return _flagged(columns, "drift")


def uncatalogued(columns: Iterable[Any], attributes: Sequence[str] = ()) -> list[str]:
    """Columns of a built table that have no catalog entry and are not declared customer ``attributes``
    (names from the customers file); an empty list means the catalog covers the table."""
    known_attributes = set(attributes)
    return [str(c) for c in columns if not is_catalogued(str(c)) and str(c) not in known_attributes]
