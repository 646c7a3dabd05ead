"""A test agent that calls another serving endpoint with the credential it is asked to use.

custom_inputs: ``target`` (endpoint name or a platform path starting with /), ``via``
(``system`` or ``user``), ``echo_token`` (put the credential's token in the output, to test
redaction and replay). custom_outputs tell what the agent could see.
"""

import os
from uuid import uuid4

import httpx
import mlflow
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse

from agentwharf.credentials import NoCredentials, system_credentials, user_credentials

try:  # at load time there must be no user credential
    user_credentials()
    USER_CREDENTIALS_AT_LOAD = True
except NoCredentials:
    USER_CREDENTIALS_AT_LOAD = False


class RelayAgent(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        custom = request.custom_inputs or {}
        outputs = {"user_credentials_at_load": USER_CREDENTIALS_AT_LOAD,
                   "databricks_token_in_env": bool(os.environ.get("DATABRICKS_TOKEN")),
                   "mlflow_token_in_env": bool(os.environ.get("MLFLOW_TRACKING_TOKEN"))}
        try:
            credentials = user_credentials() if custom.get("via") == "user" else system_credentials()
        except NoCredentials as error:
            outputs["error"] = str(error)
            credentials = None
        if credentials is not None and custom.get("target"):
            target = custom["target"]
            if target.startswith("/"):
                answer = httpx.get(f"{credentials.host}{target}", headers=credentials.headers, timeout=30)
            else:
                answer = httpx.post(f"{credentials.host}/serving-endpoints/{target}/invocations", headers=credentials.headers,
                                    json={"input": [{"role": "user", "content": "relayed"}]}, timeout=30)
            outputs["status"] = answer.status_code
            outputs["body"] = answer.text[:2000]
            if custom.get("echo_token"):
                outputs["token"] = credentials.token
        text = f"relay status {outputs.get('status')}"
        return ResponsesAgentResponse(output=[self.create_text_output_item(text=text, id=str(uuid4()))],
                                      custom_outputs=outputs)


mlflow.models.set_model(RelayAgent())
