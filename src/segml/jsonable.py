"""Plain JSON values from numpy / pandas / dates: one sanitiser for every JSON document segml writes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def jsonable(obj: Any) -> Any:
    """Convert numpy / pandas / dates to plain JSON types (NaN and infinities become ``None``)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, pd.DataFrame):
        return jsonable(obj.to_dict(orient="records"))
    if isinstance(obj, pd.Series):
        return jsonable(obj.to_dict())
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dt.date | pd.Timestamp):
        return obj.isoformat()
    return obj


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numbers of a nested mapping flattened for MLflow: ``{"a": {"b": 1}}`` -> ``{"a_b": 1.0}``; a 2-item
    list becomes ``_lo`` / ``_hi``; None, NaN, infinities and non-numbers are left out."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if value is None:
            continue
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, prefix=f"{name}_"))
        elif isinstance(value, list | tuple) or (hasattr(value, "ndim") and getattr(value, "ndim", 0) == 1):
            items = list(value)
            suffixes = ["lo", "hi"] if len(items) == 2 else [str(i) for i in range(len(items))]
            flat.update(flatten_metrics(dict(zip(suffixes, items, strict=True)), prefix=f"{name}_"))
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue  # labels, strings: not metrics
            if math.isfinite(number):
                flat[name] = number
    return flat


def metric_rows(metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Flatten ``{model: {metric: value}}`` to ``{"<model>.<metric>": value}`` for ``mlflow.log_metrics``."""
    flat: dict[str, float] = {}
    for model, values in metrics.items():
        for name, value in flatten_metrics(dict(values)).items():
            flat[f"{model}.{name}"] = value
    return flat


def flat_params(settings: Any, prefix: str = "") -> dict[str, str]:
    """A settings dataclass (or mapping) flattened to MLflow parameters: ``{"k_max": "8", …}``."""
    mapping = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings)
    flat: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flat_params(value, f"{name}."))
        else:
            text = value if isinstance(value, str) else json.dumps(jsonable(value), ensure_ascii=False)
            flat[name] = text if len(text) <= 500 else text[:499] + "…"
    return flat


__all__ = ["flat_params", "flatten_metrics", "jsonable", "metric_rows"]
