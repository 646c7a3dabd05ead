"""A plain pyfunc model with a signature, as an MLflow "models from code" file: no agent
interface, served with MLflow's scoring protocol as ``mlflow models serve`` serves it.

It prices order lines: ``total = quantity * unit_price * (1 - discount)``, one row per line,
with ``discount`` a parameter (default 0). The signature is given when logging (see
log_and_deploy.py), so the platform checks every request against it before ``predict`` runs.
"""

import mlflow
import pandas as pd
from mlflow.entities import SpanType


class OrderPricer(mlflow.pyfunc.PythonModel):
    @mlflow.trace(span_type=SpanType.CHAIN)
    def predict(self, context, model_input, params=None):
        discount = (params or {}).get("discount", 0.0)
        return pd.DataFrame({"total": self.price(model_input, discount)})

    @mlflow.trace(span_type=SpanType.TOOL)
    def price(self, lines: pd.DataFrame, discount: float) -> list[float]:
        return [round(q * p * (1 - discount), 2) for q, p in zip(lines["quantity"], lines["unit_price"])]


mlflow.models.set_model(OrderPricer())
