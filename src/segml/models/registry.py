"""The model families segml fits and compares, in one registry.

Each :class:`FamilySpec` says which classes a family has, the model names it produces (the columns of its
holdout predictions and the rows of ``comparison.json``), whether each predicts money, what it is fitted on,
and how to build its unfitted models from the family's settings. :func:`load_model` rebuilds any fitted model
from its ``to_dict`` state (every state carries a ``"family"`` key), so production scoring needs no family
name in code.

Adding a family: write ``models/<family>.py`` following :class:`segml.models.base.ModelFamily`, add one
:class:`FamilySpec` to :data:`FAMILIES` (its ``build`` reads the family's settings section
``models.<family>``), and add one test.

Settings
--------
``build(settings, seed, horizon_days)`` reads the family's settings by attribute or key (a settings
dataclass such as ``segml.train.ClusteringSettings`` or a plain mapping); a missing setting takes the model's
default. Models raise ``ValueError`` naming the constructor parameter
(:class:`~segml.models.base.InvalidParameter` carries it as ``.parameter``): the caller maps it to the YAML
key ``models.<family>.<setting>`` (for clustering, ``k_range`` comes from ``k_min`` / ``k_max``; for the
potential model ``horizon_days`` comes from the cutoffs, not from ``models.potential``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover
    from segml.config import FeatureConfig
    from segml.models.base import ModelFamily

__all__ = [
    "FAMILIES",
    "FamilySpec",
    "ModelSpec",
    "build_family",
    "config_key",
    "family",
    "family_names",
    "load_model",
    "model_names",
    "money_models",
]

#: what a family's ``fit`` reads as ``X``: the calibration feature table, a training frame with a
#: calibration-period ``target`` (features at a cutoff inside calibration, labels up to its end), or a
#: :class:`~segml.models.base.TrainingInput` (transactions; the model builds its own features)
FitInput = Literal["features", "training_frame", "transactions"]

Builder = Callable[..., dict[str, "ModelFamily"]]


@dataclass(frozen=True)
class ModelSpec:
    """One model a family produces.

    Attributes
    ----------
    name:
        Model name: the prediction column and the comparison row (``"rfm"``, ``"spend_tree"``, …).
    class_path:
        ``"module.Class"`` of the model (imported on use: LightGBM and lifetimes load only when needed).
    predicts_money:
        True when its ``predict_value`` is money over the horizon (the class's own ``predicts_money``).
    """

    name: str
    class_path: str
    predicts_money: bool

    @property
    def cls(self) -> type:
        """The model class."""
        module, _, name = self.class_path.rpartition(".")
        return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class FamilySpec:
    """A model family: its models, what it is fitted on, and how its unfitted models are built.

    Attributes
    ----------
    name:
        Family name: the ``models.<name>`` settings section and ``holdout_predictions/<name>.parquet``.
    models:
        The models it produces, in comparison order.
    fit_input:
        What ``fit`` reads as ``X`` (see :data:`FitInput`); ``y`` is the training frame's ``target`` for
        ``"training_frame"``, unused otherwise.
    builder:
        ``builder(settings, seed, horizon_days, feature_config)`` → ``{model name: unfitted model}``.
    """

    name: str
    models: tuple[ModelSpec, ...]
    fit_input: FitInput
    builder: Builder
    #: configuration key of each model parameter that is not ``models.<family>.<parameter>``
    config_keys: Mapping[str, str] = field(default_factory=dict)

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    @property
    def predicts_money(self) -> dict[str, bool]:
        """``{model name: predicts money}``."""
        return {m.name: m.predicts_money for m in self.models}

    @property
    def classes(self) -> tuple[type, ...]:
        return tuple(m.cls for m in self.models)

    def build(
        self,
        settings: Any,
        seed: int,
        horizon_days: int,
        *,
        feature_config: FeatureConfig | None = None,
    ) -> dict[str, ModelFamily]:
        """Unfitted models of this family, by model name.

        Parameters
        ----------
        settings:
            The family's settings (``models.<family>``): a dataclass or mapping; None = all defaults.
        seed:
            Experiment seed (``random_state`` of every random step).
        horizon_days:
            Forecast horizon of the money models (the holdout length in ``segml train``).
        feature_config:
            Feature configuration; the spend tree reads ``NUMERIC_FEATURES`` of it (default: every numeric
            non-label column of the frame it is fitted on).
        """
        return self.builder(settings, seed, horizon_days, feature_config)

    def config_key(self, parameter: str) -> str:
        """The experiment-YAML key a model parameter comes from, for error messages: e.g.
        ``config_key("n_bins")`` of the baselines is ``models.baselines.rfm_bins``, ``horizon_days`` is
        ``cutoffs.horizon_days``; any other parameter is ``models.<family>.<parameter>``."""
        return self.config_keys.get(parameter, f"models.{self.name}.{parameter}")


def _setting(settings: Any, name: str, default: Any) -> Any:
    """A setting by attribute or key; ``default`` when absent."""
    if settings is None:
        return default
    if isinstance(settings, Mapping):
        return settings.get(name, default)
    return getattr(settings, name, default)


def _build_baselines(settings: Any, seed: int, horizon_days: int, feature_config: Any) -> dict[str, Any]:
    from segml.models.baselines import BTYDModel, PastSpend, RFMScore

    return {
        "rfm": RFMScore(n_bins=_setting(settings, "rfm_bins", 5)),
        "rfm_sum": RFMScore(n_bins=_setting(settings, "rfm_bins", 5), score="sum"),
        "past_spend": PastSpend(horizon_days=horizon_days),
        "btyd": BTYDModel(
            penalizer=_setting(settings, "btyd_penalizer", 0.0),
            gg_penalizer=_setting(settings, "gg_penalizer", 0.0),
            horizon_days=horizon_days,
        ),
    }


def _build_clustering(settings: Any, seed: int, horizon_days: int, feature_config: Any) -> dict[str, Any]:
    from segml.models.clustering import ValueClustering

    return {
        "clustering": ValueClustering(
            method=_setting(settings, "method", "kmeans"),
            k_range=(_setting(settings, "k_min", 3), _setting(settings, "k_max", 8)),
            features=_setting(settings, "features", None),
            selection=_setting(settings, "selection", None),
            silhouette_sample=_setting(settings, "silhouette_sample", 5000),
            random_state=seed,
        )
    }


def _build_tree(settings: Any, seed: int, horizon_days: int, feature_config: Any) -> dict[str, Any]:
    from segml.models.tree import SpendTree

    features = None
    if feature_config is not None:
        from segml.features import NUMERIC_FEATURES

        features = NUMERIC_FEATURES(feature_config)
    return {
        "spend_tree": SpendTree(
            max_depth=_setting(settings, "max_depth", 3),
            min_samples_leaf=_setting(settings, "min_samples_leaf", 0.01),
            target=_setting(settings, "target", "auto"),
            features=features,
            random_state=seed,
        )
    }


def _build_potential(settings: Any, seed: int, horizon_days: int, feature_config: Any) -> dict[str, Any]:
    from segml.models.potential import PotentialValueModel

    return {
        "potential": PotentialValueModel(
            horizon_days=horizon_days,
            objective=_setting(settings, "objective", "auto"),
            n_estimators=_setting(settings, "n_estimators", None),
            max_estimators=_setting(settings, "max_estimators", 400),
            categorical=_setting(settings, "categorical", "auto"),
            max_levels=_setting(settings, "max_levels", 50),
            seasonality=_setting(settings, "seasonality", "auto"),
            random_state=seed,
            num_threads=_setting(settings, "num_threads", 1),
        )
    }


#: every family, in fit and comparison order (``segml.train.MODEL_FAMILIES``)
FAMILIES: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        FamilySpec(
            "baselines",
            (
                ModelSpec("rfm", "segml.models.baselines.RFMScore", predicts_money=False),
                ModelSpec("rfm_sum", "segml.models.baselines.RFMScore", predicts_money=False),
                ModelSpec("past_spend", "segml.models.baselines.PastSpend", predicts_money=True),
                ModelSpec("btyd", "segml.models.baselines.BTYDModel", predicts_money=True),
            ),
            fit_input="features",
            builder=_build_baselines,
            config_keys={
                "n_bins": "models.baselines.rfm_bins",
                "penalizer": "models.baselines.btyd_penalizer",
                "horizon_days": "cutoffs.horizon_days",
            },
        ),
        FamilySpec(
            "clustering",
            (ModelSpec("clustering", "segml.models.clustering.ValueClustering", predicts_money=True),),
            fit_input="training_frame",
            builder=_build_clustering,
            config_keys={"k_range": "models.clustering.k_min / k_max", "random_state": "seed"},
        ),
        FamilySpec(
            "tree",
            (ModelSpec("spend_tree", "segml.models.tree.SpendTree", predicts_money=True),),
            fit_input="training_frame",
            builder=_build_tree,
            config_keys={"random_state": "seed"},
        ),
        FamilySpec(
            "potential",
            (ModelSpec("potential", "segml.models.potential.PotentialValueModel", predicts_money=True),),
            fit_input="transactions",
            builder=_build_potential,
            config_keys={"horizon_days": "cutoffs.horizon_days", "random_state": "seed"},
        ),
    )
}


def family_names() -> tuple[str, ...]:
    """Family names in fit order (``baselines, clustering, tree, potential``)."""
    return tuple(FAMILIES)


def family(name: str) -> FamilySpec:
    """The spec of a family; ``KeyError`` naming the known families otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None


def model_names() -> tuple[str, ...]:
    """Every model name, family by family (the comparison rows)."""
    return tuple(m for spec in FAMILIES.values() for m in spec.model_names)


def money_models() -> dict[str, bool]:
    """``{model name: predicts money}`` over every family (``segml.train.MONEY_MODELS``)."""
    return {m: money for spec in FAMILIES.values() for m, money in spec.predicts_money.items()}


def build_family(
    name: str,
    settings: Any,
    seed: int,
    horizon_days: int,
    *,
    feature_config: FeatureConfig | None = None,
) -> dict[str, ModelFamily]:
    """Unfitted models of family ``name`` (see :meth:`FamilySpec.build`)."""
    return family(name).build(settings, seed, horizon_days, feature_config=feature_config)


def config_key(family_name: str, parameter: str) -> str:
    """The experiment-YAML key of a model parameter (see :meth:`FamilySpec.config_key`): what a caller names
    when a model raises :class:`~segml.models.base.InvalidParameter` (``exc.parameter``)."""
    return family(family_name).config_key(parameter)


#: markers of states written before states carried a "family" key (model files and artifacts already out)
_LEGACY_MARKERS = (
    ("format", "segml.potential_value/1", "potential"),
    ("model", "segml.models.clustering.ValueClustering", "clustering"),
    ("model", "segml.models.tree.SpendTree", "tree"),
)


def _family_of(state: Mapping[str, Any]) -> str:
    if "family" in state:
        return str(state["family"])
    for key, value, name in _LEGACY_MARKERS:
        if state.get(key) == value:
            return name
    raise ValueError("model state: no 'family' key (expected the output of a model's to_dict())")


def load_model(state: dict[str, Any]) -> ModelFamily:
    """Rebuild a fitted model of any family from its ``to_dict`` state, for production scoring.

    The state's ``"family"`` key picks the family; in a family of several classes (the baselines) its
    ``"model"`` key (``"module.Class"``) picks the class. States written before the ``"family"`` key existed
    (potential, clustering and spend-tree model files) are recognised by their ``format`` / ``model`` marker.

    Raises
    ------
    ValueError
        The state has no known ``"family"``, or names a class the family does not have.
    """
    if not isinstance(state, Mapping):
        raise ValueError(f"model state: expected a dict from a model's to_dict(), got {type(state).__name__}")
    name = _family_of(state)
    if name not in FAMILIES:
        raise ValueError(f"model state: unknown family {name!r}; known: {', '.join(FAMILIES)}")
    models = FAMILIES[name].models
    if len(models) == 1:
        chosen = models[0]
    else:
        matching = [m for m in models if m.class_path == state.get("model")]
        if not matching:
            classes = ", ".join(m.class_path for m in models)
            raise ValueError(
                f"model state of family {name!r}: model {state.get('model')!r} is not one of {classes}"
            )
        chosen = matching[0]
    return chosen.cls.from_dict(dict(state))
