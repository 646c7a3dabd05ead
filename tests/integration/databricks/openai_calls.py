"""Run inside the databricks-openai venv: DatabricksOpenAI() calls, printed as one JSON object.

Uses DATABRICKS_HOST and DATABRICKS_TOKEN from the environment, as users do; nothing else.
"""

import json
import sys

from databricks_openai import DatabricksOpenAI

endpoint = sys.argv[1]
client = DatabricksOpenAI()

response = client.responses.create(model=endpoint, input=[{"role": "user", "content": "dbx openai"}])
events = list(client.responses.create(model=endpoint, input=[{"role": "user", "content": "dbx stream"}], stream=True))
chat = client.chat.completions.create(model=endpoint, messages=[{"role": "user", "content": "dbx chat"}])
chunks = list(client.chat.completions.create(model=endpoint, messages=[{"role": "user", "content": "dbx chat stream"}],
                                             stream=True))
done = [e.item for e in events if e.type == "response.output_item.done"]
print(json.dumps({
    "base_url": str(client.base_url),
    "responses": response.output_text,
    "responses_object": response.object,
    "streamed": [e.type for e in events],
    "stream_deltas": "".join(e.delta for e in events if e.type == "response.output_text.delta"),
    "stream_done_text": [c.text for item in done for c in item.content],
    "chat": chat.choices[0].message.content,
    "chat_role": chat.choices[0].message.role,
    "chat_object": chat.object,
    "chat_stream": "".join(c.choices[0].delta.content or "" for c in chunks if c.choices),
    "chat_chunk_objects": sorted({c.object for c in chunks}),
}))
