"""Run inside the databricks-sdk venv: the guide's query calls, printed as one JSON object.

Uses DATABRICKS_HOST and DATABRICKS_TOKEN from the environment, as users do.
"""

import json
import sys

from databricks.sdk import WorkspaceClient

endpoint = sys.argv[1]
w = WorkspaceClient()
listed = [e.name for e in w.serving_endpoints.list()]
got = w.serving_endpoints.get(endpoint)
w.serving_endpoints.query(name=endpoint, input=[{"role": "user", "content": "from the sdk"}])
client = w.serving_endpoints.get_open_ai_client()
responses = client.responses.create(model=endpoint, input="sdk openai").output_text
streamed = [e.type for e in client.responses.create(model=endpoint, input="sdk stream", stream=True)]
chat = client.chat.completions.create(model=endpoint, messages=[{"role": "user", "content": "sdk chat"}]).choices[0].message.content
chat_stream = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
    model=endpoint, messages=[{"role": "user", "content": "sdk chat stream"}], stream=True))
print(json.dumps({
    "listed": listed,
    "ready": got.state.ready.value,
    "config_update": got.state.config_update.value,
    "entities": [(e.name, e.entity_name, e.entity_version) for e in got.config.served_entities],
    "routes": [(r.served_model_name, r.traffic_percentage) for r in got.config.traffic_config.routes],
    "responses": responses,
    "streamed": streamed,
    "chat": chat,
    "chat_stream": chat_stream,
}))
