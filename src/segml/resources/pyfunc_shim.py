"""MLflow models-from-code entry point of a segml grading artifact.

MLflow executes this file when the model is loaded. It only hands MLflow the grading model of the
*installed* segml package; that model runs the checks of ``segml verify`` on the artifact (manifest, every
file's content, probe customers) before it uses the data files (booster text, policy YAML, JSON). No pickle is
involved. The byte-code cache Python wrote for this file is removed again: the artifact lists every file.
"""

from mlflow.models import set_model

from segml.artifact.pyfunc import GradingModel, remove_own_bytecode

remove_own_bytecode(__file__)
set_model(GradingModel(__file__))
