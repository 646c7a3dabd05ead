"""An agent that answers by asking another serving endpoint, on behalf of the calling user.

It declares, when logged (see log_and_deploy.py):
  * UserAuthPolicy(api_scopes=["serving.serving-endpoints"]): each request gets a short-lived
    token of the *caller*, which can query only endpoints the caller may query;
  * SystemAuthPolicy(resources=[DatabricksServingEndpoint(<helper endpoint>)]): its own
    credential, which can query exactly that endpoint (used here for a status line).

The user credential exists only inside predict, as the guide asks: build user-scoped clients
there, never at load time.
"""

import os
from uuid import uuid4

import httpx
import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse

from agentwharf.credentials import NoCredentials, system_credentials, user_credentials

HELPER_ENDPOINT = os.environ.get("HELPER_ENDPOINT", "agents_main-default-echo")


def _ask(credentials, text: str) -> httpx.Response:
    return httpx.post(f"{credentials.host}/serving-endpoints/{HELPER_ENDPOINT}/invocations", headers=credentials.headers,
                      json={"input": [{"role": "user", "content": text}]}, timeout=60)


class OnBehalfOfAgent(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        question = request.input[-1].content
        try:
            user = user_credentials()  # the caller's rights, not the agent's
        except NoCredentials:
            # Outside serving (MLflow runs predict once while logging, to check the output).
            return self._answer("Deploy me on agentwharf: there is no calling user here.", {})
        as_user = _ask(user, question)
        if as_user.status_code == 200:
            text = as_user.json()["output"][0]["content"][0]["text"]
        else:
            text = f"{HELPER_ENDPOINT} refused the request on your behalf ({as_user.status_code}): {as_user.json()['message']}"
        as_agent = _ask(system_credentials(), "ping").status_code
        return self._answer(text, {"helper_status_as_user": as_user.status_code, "helper_status_as_agent": as_agent})

    def _answer(self, text: str, outputs: dict) -> ResponsesAgentResponse:
        return ResponsesAgentResponse(output=[self.create_text_output_item(text=text, id=str(uuid4()))], custom_outputs=outputs)


mlflow.models.set_model(OnBehalfOfAgent())
