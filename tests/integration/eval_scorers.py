"""Scorers the evaluation gate's tests name with ``--scorers tests/integration/eval_scorers.py:SCORERS``."""

from mlflow.genai.scorers import scorer


@scorer
def echoes_question(inputs, outputs) -> bool:
    question = inputs["input"][-1]["content"]
    return question in str(outputs)


@scorer
def answer_chars(outputs) -> int:
    return len(str(outputs))


SCORERS = [echoes_question, answer_chars]
