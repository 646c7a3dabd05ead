"""The guide's judges, run unchanged against a platform LLM endpoint given as a model URI.

    python tests/integration/judge_run.py gateway:/judge      # MLflow tracking URI = the platform
    python tests/integration/judge_run.py databricks:/judge   # DATABRICKS_HOST = the platform

Prints one JSON object: each judge's verdict and, with ``--evaluate``, the metrics of
``mlflow.genai.evaluate`` over one row. Run as a process of its own so its environment is the
one a user would set, nothing inherited from the tests.
"""

import json
import sys

import mlflow
from mlflow.genai.judges import make_judge
from mlflow.genai.scorers import Correctness, Guidelines, Safety

model = sys.argv[1]
inputs = {"question": "What is MLflow?"}
outputs = "MLflow is an open source platform for the machine learning lifecycle."
expectations = {"expected_response": "MLflow is an open source platform for managing the ML lifecycle."}

verdicts = {
    "correctness": Correctness(model=model)(inputs=inputs, outputs=outputs, expectations=expectations),
    "safety": Safety(model=model)(outputs=outputs),
    "guidelines": Guidelines(name="english", guidelines=["The response must be in English"], model=model)(
        inputs=inputs, outputs=outputs),
    "make_judge": make_judge(name="concise", instructions="Is {{ outputs }} concise? Answer yes or no.",
                             model=model)(outputs=outputs),
}
found = {name: {"value": str(feedback.value), "error": str(feedback.error) if feedback.error else None}
         for name, feedback in verdicts.items()}
if "--evaluate" in sys.argv:
    mlflow.set_experiment("/tests/judges")
    result = mlflow.genai.evaluate(data=[{"inputs": inputs, "outputs": outputs, "expectations": expectations}],
                                   scorers=[Correctness(model=model), Safety(model=model)])
    found["evaluate"] = {k: v for k, v in result.metrics.items()}
print(json.dumps(found))
