// The chat of the playground and the review app: sends the conversation to an endpoint's own
// gateway route (the browser's cookie authenticates it), streams the answer as server-sent
// events, shows tool calls and their outputs, then links the answer's trace, shows latency and
// tokens, and takes thumbs up/down feedback. Model text is only ever set as textContent.
(function () {
  "use strict";
  var root = document.getElementById("chat");
  if (!root) return;
  var endpoint = root.dataset.endpoint;
  var target = document.getElementById("target");
  var shapeSelect = document.getElementById("shape");
  var custom = document.getElementById("custom-inputs");
  var log = document.getElementById("chat-log");
  var form = document.getElementById("chat-form");
  var message = document.getElementById("message");
  var errorBox = document.getElementById("chat-error");
  var sendButton = document.getElementById("send");
  var history = [];

  function targetShape() { return target.selectedOptions[0].dataset.shape || "responses"; }
  function shape() { return shapeSelect ? shapeSelect.value : targetShape(); }
  function syncShape() { if (shapeSelect) shapeSelect.value = targetShape(); }
  target.addEventListener("change", syncShape);
  syncShape();

  function showError(text) { errorBox.textContent = text; errorBox.hidden = !text; }

  function bubble(role, who, preformatted) {
    var li = document.createElement("li");
    li.className = "turn " + role;
    var label = document.createElement("span");
    label.className = "who";
    label.textContent = who;
    var body = document.createElement(preformatted ? "pre" : "div");
    if (!preformatted) body.className = "text";
    li.appendChild(label);
    li.appendChild(body);
    log.appendChild(li);
    return {li: li, body: body};
  }

  function textOf(content) {
    if (typeof content === "string") return content;
    if (Array.isArray(content)) return content.map(function (p) { return (p && p.text) || ""; }).join("");
    return content === undefined || content === null ? "" : JSON.stringify(content, null, 2);
  }

  function customInputs() {
    var raw = (custom && custom.value.trim()) || "{}";
    var parsed;
    try { parsed = JSON.parse(raw); } catch (e) { throw new Error("custom_inputs is not valid JSON: " + e.message); }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("custom_inputs must be a JSON object");
    return parsed;
  }

  function requestBody(text) {
    var kind = shape();
    if (kind === "pyfunc") {
      try { return JSON.parse(text); } catch (e) { throw new Error("For this model, type the request as JSON (MLflow's scoring protocol, e.g. {\"inputs\": ...}): " + e.message); }
    }
    var extra = customInputs();
    var body = {stream: true};
    if (kind === "responses") body.input = history;
    else body.messages = history;
    if (kind !== "chat_model" && Object.keys(extra).length) body.custom_inputs = extra;
    return body;
  }

  // One answer being received: text bubbles by item/message id, tool calls, usage.
  function Answer() {
    this.bubbles = {};
    this.order = [];
    this.usage = null;
  }
  Answer.prototype.text = function (id, delta, replace) {
    var key = id || "_";
    if (!this.bubbles[key]) { this.bubbles[key] = bubble("assistant", "Assistant"); this.order.push(key); }
    var node = this.bubbles[key].body;
    node.textContent = replace ? delta : node.textContent + delta;
  };
  Answer.prototype.toolCall = function (name, args) {
    bubble("tool", "Tool call: " + (name || "?"), true).body.textContent = typeof args === "string" ? args : JSON.stringify(args, null, 2);
  };
  Answer.prototype.toolOutput = function (output) {
    bubble("tool", "Tool output", true).body.textContent = textOf(output);
  };
  Answer.prototype.finalText = function () {
    var self = this;
    return this.order.map(function (k) { return self.bubbles[k].body.textContent; }).join("\n");
  };
  Answer.prototype.item = function (item) {
    if (!item) return;
    if (item.type === "function_call") this.toolCall(item.name, item.arguments);
    else if (item.type === "function_call_output") this.toolOutput(item.output);
    else if (item.type === "message" || item.role) this.text(item.id, textOf(item.content), true);
    else bubble("assistant", "Output", true).body.textContent = JSON.stringify(item, null, 2);
  };
  Answer.prototype.message = function (m) {
    if (!m) return;
    if (m.role === "tool") { this.toolOutput(m.content); return; }
    if (m.content) this.text(m.id, textOf(m.content), true);
    var self = this;
    (m.tool_calls || []).forEach(function (c) { self.toolCall(c.function && c.function.name, c.function && c.function.arguments); });
  };
  Answer.prototype.event = function (e) {
    if (e.error_code && e.message) { showError(e.error_code + ": " + e.message); return; }
    if (e.type === "response.output_text.delta") { this.text(e.item_id, e.delta || ""); return; }
    if (e.type === "response.output_item.done") { this.item(e.item); return; }
    if (e.type === "response.completed" && e.response && e.response.usage) { this.usage = e.response.usage; return; }
    if (e.delta && (e.delta.content !== undefined || e.delta.tool_calls)) {   // ChatAgent chunk
      var d = e.delta;
      if (d.role === "tool") { this.toolOutput(d.content); return; }
      if (d.content) this.text(d.id, d.content);
      var self = this;
      (d.tool_calls || []).forEach(function (c) { self.toolCall(c.function && c.function.name, c.function && c.function.arguments); });
      return;
    }
    if (Array.isArray(e.choices)) {                                          // chat completion chunk
      if (e.usage) this.usage = e.usage;
      var choice = e.choices[0] || {};
      var delta = choice.delta || {};
      if (delta.content) this.text("_", delta.content);
      var that = this;
      (delta.tool_calls || []).forEach(function (c) { if (c.function && c.function.name) that.toolCall(c.function.name, c.function.arguments); });
    }
  };
  Answer.prototype.whole = function (data) {
    var self = this;
    if (Array.isArray(data.output)) data.output.forEach(function (i) { self.item(i); });
    else if (Array.isArray(data.messages)) data.messages.forEach(function (m) { self.message(m); });
    else if (Array.isArray(data.choices)) { self.message((data.choices[0] || {}).message); self.usage = data.usage || null; }
    else bubble("assistant", "Answer", true).body.textContent = JSON.stringify(data, null, 2);
    if (data.usage) this.usage = data.usage;
  };

  async function readStream(response, answer) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    for (;;) {
      var chunk = await reader.read();
      if (chunk.done) break;
      buffer += decoder.decode(chunk.value, {stream: true});
      var events = buffer.split("\n\n");
      buffer = events.pop();
      events.forEach(function (block) {
        block.split("\n").forEach(function (line) {
          if (line.indexOf("data: ") !== 0) return;
          var data = line.slice(6);
          if (data === "[DONE]") return;
          try { answer.event(JSON.parse(data)); } catch (e) { /* a partial or foreign line */ }
        });
      });
    }
  }

  // The answer's row and trace, once the writer has stored them. The platform waits up to 20 s
  // for them per ask; a writer further behind (a burst of traffic) is asked again, for minutes,
  // rather than leaving the answer without its trace link.
  function requestInfo(requestId, attempt) {
    return fetch("/serving/api/endpoints/" + encodeURIComponent(endpoint) + "/requests/" + encodeURIComponent(requestId),
                 {credentials: "same-origin"})
      .then(function (r) {
        if (r.status === 404 && attempt < 5) {
          return new Promise(function (wait) { setTimeout(wait, 1000); })
            .then(function () { return requestInfo(requestId, attempt + 1); });
        }
        return r.ok ? r.json() : null;
      });
  }

  function metaLine(answer, requestId, elapsed) {
    var li = log.lastElementChild || bubble("assistant", "Assistant").li;
    var meta = document.createElement("div");
    meta.className = "answer-meta";
    var timing = document.createElement("span");
    timing.textContent = "Answered in " + elapsed + " ms";
    meta.appendChild(timing);
    li.appendChild(meta);
    if (!requestId) return;
    requestInfo(requestId, 0)
      .then(function (info) {
        if (!info) return;
        timing.textContent = "Latency " + Math.round(info.latency_ms) + " ms (browser: " + elapsed + " ms)";
        var tokens = document.createElement("span");
        var usage = info.tokens || answer.usage;
        tokens.textContent = usage ? "Tokens: " + (usage.input_tokens || usage.prompt_tokens || 0) + " in, " +
          (usage.output_tokens || usage.completion_tokens || 0) + " out" : "Tokens: not reported by the model";
        meta.appendChild(tokens);
        if (info.trace_url) {
          var link = document.createElement("a");
          link.href = info.trace_url;
          link.textContent = "View trace";
          link.className = "trace-link";
          link.dataset.traceId = info.trace_id;
          meta.appendChild(link);
          meta.appendChild(feedbackWidget(info.trace_id));
        }
      }).catch(function () {});
  }

  var feedbackCount = 0;
  function feedbackWidget(traceId) {
    feedbackCount += 1;
    var box = document.createElement("form");
    box.className = "feedback";
    box.setAttribute("aria-label", "Feedback on this answer");
    var choice = null;
    function thumb(label, value, glyph) {
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = glyph;
      b.setAttribute("aria-label", label);
      b.setAttribute("aria-pressed", "false");
      b.addEventListener("click", function () {
        choice = value;
        box.querySelectorAll("button[aria-pressed]").forEach(function (x) { x.setAttribute("aria-pressed", "false"); });
        b.setAttribute("aria-pressed", "true");
      });
      return b;
    }
    var commentId = "feedback-comment-" + feedbackCount;
    var label = document.createElement("label");
    label.htmlFor = commentId;
    label.textContent = "Comment";
    var comment = document.createElement("input");
    comment.id = commentId;
    comment.type = "text";
    var submit = document.createElement("button");
    submit.type = "submit";
    submit.textContent = "Send feedback";
    var status = document.createElement("span");
    status.setAttribute("role", "status");
    box.appendChild(thumb("Thumbs up", true, "\uD83D\uDC4D"));
    box.appendChild(thumb("Thumbs down", false, "\uD83D\uDC4E"));
    box.appendChild(label);
    box.appendChild(comment);
    box.appendChild(submit);
    box.appendChild(status);
    box.addEventListener("submit", function (event) {
      event.preventDefault();
      if (choice === null) { status.textContent = "Choose thumbs up or down first."; return; }
      fetch("/serving/api/endpoints/" + encodeURIComponent(endpoint) + "/feedback", {
        method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({trace_id: traceId, value: choice, comment: comment.value})
      }).then(function (r) { return r.json().then(function (j) { return [r.ok, j]; }); })
        .then(function (pair) { status.textContent = pair[0] ? "Feedback saved." : "Not saved: " + pair[1].message; })
        .catch(function (e) { status.textContent = "Not saved: " + e.message; });
    });
    return box;
  }

  async function send(text) {
    showError("");
    var kind = shape();
    if (kind !== "pyfunc") history.push({role: "user", content: text});
    var body;
    try { body = requestBody(text); } catch (e) { if (kind !== "pyfunc") history.pop(); showError(e.message); return; }
    bubble("user", "You").body.textContent = text;
    var answer = new Answer();
    var started = performance.now();
    sendButton.disabled = true;
    try {
      var response = await fetch(target.value, {method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "Accept": "text/event-stream, application/json"},
        body: JSON.stringify(body)});
      var requestId = response.headers.get("x-agentwharf-request-id");
      if (!response.ok) {
        var problem = await response.json().catch(function () { return {message: response.statusText}; });
        showError((problem.error_code ? problem.error_code + ": " : "") + (problem.message || response.status));
        if (kind !== "pyfunc") history.pop();
        return;
      }
      if ((response.headers.get("content-type") || "").indexOf("text/event-stream") >= 0) await readStream(response, answer);
      else answer.whole(await response.json());
      if (kind !== "pyfunc") history.push({role: "assistant", content: answer.finalText()});
      metaLine(answer, requestId, Math.round(performance.now() - started));
    } catch (e) {
      showError("The request failed: " + e.message);
    } finally {
      sendButton.disabled = false;
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = message.value.trim();
    if (!text) return;
    message.value = "";
    send(text);
  });
  message.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); form.requestSubmit(); }
  });
  document.getElementById("reset").addEventListener("click", function () {
    history = [];
    while (log.firstChild) log.removeChild(log.firstChild);
    showError("");
    message.focus();
  });
})();
