"""MLflow models-from-code entry point of a segml grading artifact.

MLflow executes this file when the model is loaded. It only hands MLflow the grading model of the
*installed* segml package; that model verifies the artifact's manifest (SHA-256 of every file) before it
reads the data files (booster text, policy YAML, JSON). No pickle is involved.
"""

from mlflow.models import set_model

from segml.artifact.pyfunc import GradingModel

set_model(GradingModel(__file__))
