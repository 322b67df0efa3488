"""MLflow models-from-code definition of the production potential-value model (no pickle).

Logged by :func:`segml.runner.log_potential_model` with the model state (``potential_production.json``:
settings and LightGBM booster text) as the artifact ``model_state``. Input: a customer feature table
(``segml.features.build_features`` at the scoring cutoff); output: predicted spend over the horizon.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class PotentialValuePyfunc(PythonModel):
    """Predicted future spend per row of a feature table."""

    def load_context(self, context: Any) -> None:
        from segml.models.potential import PotentialValueModel

        with open(context.artifacts["model_state"], encoding="utf-8") as fh:
            self.model = PotentialValueModel.from_dict(json.load(fh))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.Series:
        return pd.Series(self.model.predict(model_input), name="predicted_value")


mlflow.models.set_model(PotentialValuePyfunc())
