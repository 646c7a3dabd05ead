"""A test agent that calls an LLM endpoint of the platform the way an agent author would,
with the environment the platform gives it and nothing else.

custom_inputs: ``endpoint`` (the LLM endpoint), ``client`` (``openai``: ``openai.OpenAI()`` with
no arguments; ``deploy``: ``mlflow.deployments.get_deploy_client("databricks")``), ``via``
(``system``, or ``user`` for the caller's on-behalf-of token). custom_outputs: ``status`` (200 or
the HTTP status the call was refused with) and ``text`` (the LLM's answer, or the refusal).
"""

from uuid import uuid4

import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse

from agentwharf.credentials import NoCredentials, user_credentials

MESSAGES = [{"role": "user", "content": "hello from an agent"}]


def _openai(via: str, endpoint: str) -> tuple[int, str]:
    import openai

    if via == "user":
        user = user_credentials()
        client = openai.OpenAI(base_url=f"{user.host}/serving-endpoints", api_key=user.token)
    else:
        client = openai.OpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY: the platform's
    try:
        answer = client.chat.completions.create(model=endpoint, messages=MESSAGES)
    except openai.APIStatusError as error:
        return error.status_code, str(error.message)
    return 200, answer.choices[0].message.content


def _deploy_client(endpoint: str) -> tuple[int, str]:
    from mlflow.deployments import get_deploy_client

    try:
        answer = get_deploy_client("databricks").predict(endpoint=endpoint, inputs={"messages": MESSAGES})
    except Exception as error:  # MLflow raises its own exception with the HTTP status in the text
        text = str(error)
        return (403 if "403" in text else 429 if "429" in text else 500), text[:500]
    return 200, answer["choices"][0]["message"]["content"]


class LlmCallerAgent(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        custom = request.custom_inputs or {}
        endpoint, via = custom.get("endpoint", ""), custom.get("via", "system")
        if not endpoint:  # MLflow predicts once on an example as it logs the model: nothing to call
            status, text = 0, "no endpoint asked for"
        else:
            try:
                status, text = _deploy_client(endpoint) if custom.get("client") == "deploy" else _openai(via, endpoint)
            except NoCredentials as error:
                status, text = 0, str(error)
        return ResponsesAgentResponse(output=[self.create_text_output_item(text=text, id=str(uuid4()))],
                                      custom_outputs={"status": status, "text": text})


mlflow.models.set_model(LlmCallerAgent())
