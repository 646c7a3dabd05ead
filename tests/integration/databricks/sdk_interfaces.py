"""Run inside the databricks-sdk venv: the SDK's query calls against a ChatAgent, a ChatModel and
a plain pyfunc endpoint (argv 1-3), printed as one JSON object.

Uses DATABRICKS_HOST and DATABRICKS_TOKEN from the environment, as users do.
"""

import json
import sys

from databricks.sdk import WorkspaceClient
from databricks.sdk.service.serving import ChatMessage, ChatMessageRole, DataframeSplitInput

chat_agent, chat_model, pyfunc = sys.argv[1:4]
w = WorkspaceClient()
ask = [ChatMessage(role=ChatMessageRole.USER, content="from the sdk")]

# query() answers with the SDK's typed response, which has no field for a ChatAgent's messages:
# the call succeeding is what it shows; the raw client reads the answer.
w.serving_endpoints.query(name=chat_agent, messages=ask)
raw = w.api_client.do("POST", f"/serving-endpoints/{chat_agent}/invocations",
                      body={"messages": [{"role": "user", "content": "from the sdk"}]})
model = w.serving_endpoints.query(name=chat_model, messages=ask, max_tokens=2).choices[0]
rows = [{"quantity": 2, "unit_price": 3.5}, {"quantity": 1, "unit_price": 10.0}]
records = w.serving_endpoints.query(name=pyfunc, dataframe_records=rows).predictions
split = w.serving_endpoints.query(name=pyfunc, dataframe_split=DataframeSplitInput(
    columns=["quantity", "unit_price"], data=[[2, 3.5], [1, 10.0]])).predictions

client = w.serving_endpoints.get_open_ai_client()
chat = client.chat.completions.create(model=chat_agent, messages=[{"role": "user", "content": "sdk chat"}])
print(json.dumps({
    "chat_agent_raw": raw["messages"][-1]["content"],
    "chat_agent_openai": chat.choices[0].message.content,
    "chat_agent_openai_stream": "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=chat_agent, messages=[{"role": "user", "content": "sdk stream"}], stream=True)),
    "chat_agent_responses": client.responses.create(model=chat_agent, input="sdk responses").output_text,
    "chat_model": [model.message.content, model.index],  # the SDK reads "finishReason", which no server sends
    "chat_model_openai_stream": "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=chat_model, messages=[{"role": "user", "content": "sdk stream"}], stream=True)),
    "pyfunc_records": records,
    "pyfunc_split": split,
}))
