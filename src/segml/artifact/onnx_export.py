"""ONNX export of the potential-value boosters with a parity check against LightGBM.

Each LightGBM booster of the production model becomes one ONNX file (onnxmltools ``convert_lightgbm``,
``target_opset`` 15, ai.onnx.ml ``TreeEnsembleRegressor``/``Classifier``):

- input ``input``: float32 matrix of the model columns in ``spec/feature_spec.json`` ``model.input_columns``
  order — the feature table after seasonal adjustment, categorical attributes as level codes (unknown or
  missing → NaN), plus ``window_days`` = ``horizon_days`` when the model uses it;
- output: the booster's response (tweedie: the per-day spend rate; hurdle ``active``: P(spend > 0), the
  second column of ``probabilities``; hurdle ``spend``: E[rate | spend > 0]).

How outputs combine into predicted value (the same formula as ``PotentialValueModel.predict``)::

    rate  = tweedie                      (tweedie)   |  active × spend   (hurdle)
    rate' = level · reference · (rate / reference) ** exponent            (spread in feature_spec, if any)
    predicted_value = rate' × Σ season_profile[month(d)] over the horizon_days after as_of

ONNX Runtime computes in float32, so scores can move by ~1e-6 and flip the grade of a customer whose score
sits on a grade boundary; the parity report counts those customers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from segml.artifact.manifest import onnx_file
from segml.storage import write_bytes

#: highest ai.onnx opset used (ONNX Runtime releases of several years read it)
TARGET_OPSET = 15
RTOL = 1e-4
ATOL = 1e-5


def _booster_for(model: Any, name: str) -> Any:
    import lightgbm as lgb

    booster = model.boosters_[name]
    rounds = int(model.n_estimators_[name])
    if booster.current_iteration() > rounds:
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=rounds))
    return booster


def convert_booster(model: Any, name: str) -> bytes:
    """Serialized ONNX model of booster ``name`` (deterministic bytes for a given booster)."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    booster = _booster_for(model, name)
    n_columns = booster.num_feature()
    onx = onnxmltools.convert_lightgbm(
        booster,
        name=f"segml_potential_{name}",
        initial_types=[("input", FloatTensorType([None, n_columns]))],
        target_opset=TARGET_OPSET,
        zipmap=False,
    )
    onx.graph.name = f"segml_potential_{name}"  # the converter otherwise names graphs with a random uuid
    onx.doc_string = f"segml potential-value booster '{name}' ({booster.num_trees()} trees)"
    return onx.SerializeToString(deterministic=True)


def onnx_session(data: bytes) -> Any:
    """A single-threaded ONNX Runtime session (deterministic summation order)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, matrix: np.ndarray) -> np.ndarray:
    """The booster response from an ONNX session (probability of class 1 for classifiers)."""
    outputs = session.run(None, {"input": np.ascontiguousarray(matrix, dtype=np.float32)})
    if len(outputs) >= 2:  # classifier: label, probabilities
        return np.asarray(outputs[1], dtype=float)[:, 1]
    return np.asarray(outputs[0], dtype=float).reshape(-1)


def combine(model: Any, responses: dict[str, np.ndarray], features: pd.DataFrame) -> np.ndarray:
    """Predicted value from booster responses (see the module docstring)."""
    rate = responses["tweedie"] if model.objective_ == "tweedie" else responses["active"] * responses["spend"]
    return model.value_from_rate(rate, features)


def parity_report(
    model: Any,
    policy: Any,
    features: pd.DataFrame,
    graded: pd.DataFrame,
    onnx_models: dict[str, bytes],
    scorer: Any | None = None,
) -> dict[str, Any]:
    """Compare ONNX with LightGBM on ``features`` (booster outputs, predicted value, score and grade).

    Parameters
    ----------
    graded:
        The LightGBM grades of ``features`` (``segml.scoring.grade_features`` output, same rows).
    scorer:
        The fallback scorer when it drives the grade score (the forecast is then only the matrix's axis).
    """
    matrix = model.design_matrix(features)
    boosters: dict[str, Any] = {}
    lgb_out: dict[str, np.ndarray] = {}
    onnx_out: dict[str, np.ndarray] = {}
    passed = True
    for name in sorted(onnx_models):
        expected = model.boosters_[name].predict(matrix, num_iteration=int(model.n_estimators_[name]))
        got = run_onnx(onnx_session(onnx_models[name]), matrix)
        lgb_out[name], onnx_out[name] = expected, got
        abs_err = np.abs(got - expected)
        rel_err = abs_err / np.maximum(np.abs(expected), np.finfo(float).tiny)
        ok = bool(np.allclose(got, expected, rtol=RTOL, atol=ATOL))
        passed &= ok
        boosters[name] = {
            "trees": int(model.n_estimators_[name]),
            "max_abs_error": float(abs_err.max(initial=0.0)),
            "max_rel_error": float(rel_err.max(initial=0.0)),
            "within_tolerance": ok,
        }
    # the booster's forecast (with a fallback scorer the predicted_value column holds the scorer's money)
    predicted_lgb = (
        graded["predicted_value"].to_numpy(dtype=float) if scorer is None else model.predict(features)
    )
    predicted_onnx = combine(model, onnx_out, features)
    value_abs = np.abs(predicted_onnx - predicted_lgb)
    value_rel = value_abs / np.maximum(np.abs(predicted_lgb), np.finfo(float).tiny)
    if scorer is not None:
        # the grade score comes from the fallback scorer; the forecast only moves the matrix's growth axis
        scores = np.asarray(scorer.predict_value(features), dtype=float)

        def grade_with(predicted: np.ndarray) -> pd.DataFrame:
            return policy.grade(features, scores, axis_potential=predicted)

    else:

        def grade_with(predicted: np.ndarray) -> pd.DataFrame:
            return policy.grade(features, predicted)

    onnx_grades = grade_with(predicted_onnx)
    purchased = features["has_purchases"].fillna(False).to_numpy(dtype=bool)
    key = "predicted_value" if policy.threshold_on == "predicted_value" else "score"
    lgb_key = graded[key].to_numpy(dtype=float)
    onnx_key = predicted_onnx if key == "predicted_value" else onnx_grades["score"].to_numpy(dtype=float)
    if scorer is not None and key == "predicted_value":
        onnx_key = lgb_key
    key_error = np.abs(onnx_key - lgb_key)[purchased]
    max_key_error = float(np.nanmax(key_error)) if key_error.size else 0.0
    # near a boundary: moving the predicted value by the measured relative float32 error can change the
    # grade (score is monotone in predicted value, so the band's ends bound every score in between)
    epsilon = float(value_rel[purchased].max(initial=0.0))
    lower = grade_with(predicted_lgb * (1.0 - epsilon))["grade"].to_numpy()
    upper = grade_with(predicted_lgb * (1.0 + epsilon))["grade"].to_numpy()
    near = purchased & (lower != upper)
    differs = onnx_grades["grade"].to_numpy() != graded["grade"].to_numpy()
    return {
        "format": "segml.onnx_parity",
        "format_version": 1,
        "target_opset": TARGET_OPSET,
        "tolerance": {"rtol": RTOL, "atol": ATOL},
        "customers": len(features),
        "boosters": boosters,
        "predicted_value": {
            "max_abs_error": float(value_abs.max(initial=0.0)),
            "max_rel_error": float(value_rel.max(initial=0.0)),
        },
        "grades_on": policy.threshold_on,
        "max_score_error": max_key_error,
        "boundary_band_rel_error": epsilon,
        "n_within_error_of_boundary": int(near.sum()),
        "n_grade_differs": int(differs.sum()),
        "n_grade_differs_away_from_boundary": int((differs & ~near).sum()),
        "passed": bool(passed and not (differs & ~near).any()),
        "summary": parity_summary(int(differs.sum()), int((differs & ~near).sum()), passed),
    }


def parity_summary(n_differ: int, n_away: int, boosters_ok: bool = True) -> str:
    """One sentence on the grades ONNX and LightGBM give: how many differ and whether all sit on a boundary."""
    if not boosters_ok:
        head = "booster outputs outside tolerance"
        return head + (f"; {n_differ:,} grades differ" if n_differ else "")
    if n_differ == 0:
        return "no grade differs"
    noun = "grade differs" if n_differ == 1 else "grades differ"
    if n_away == 0:
        return f"{n_differ:,} {noun}, all within float32 error of a boundary"
    return f"{n_differ:,} {noun}, {n_away:,} of them away from a boundary"


def export_onnx(
    model: Any,
    policy: Any,
    features: pd.DataFrame,
    graded: pd.DataFrame,
    root: Path,
    scorer: Any | None = None,
) -> dict[str, Any]:
    """Write ``model/onnx/<booster>.onnx`` for every booster and return the parity report.

    Without onnxmltools/onnxruntime installed no ONNX file is written and the report says so.
    """
    try:
        import onnxmltools  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return {
            "format": "segml.onnx_parity",
            "format_version": 1,
            "target_opset": None,
            "passed": None,
            "skipped": f"ONNX export needs onnxmltools and onnxruntime ({exc.name} is not installed)",
        }
    onnx_models = {name: convert_booster(model, name) for name in sorted(model.boosters_)}
    for name, data in onnx_models.items():
        write_bytes(root / onnx_file(name), data)
    return parity_report(model, policy, features, graded, onnx_models, scorer=scorer)
