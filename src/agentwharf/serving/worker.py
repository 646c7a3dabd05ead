"""A model worker: one OS process serving one model version over a Unix socket or TCP.

Started by the supervisor as ``python -m agentwharf.serving.worker --listen ADDRESS --model-uri URI``
(``unix:/path`` or ``tcp://host:port``, see ``transport``; with ``--ready-file PATH`` for TCP,
where it writes the port it bound; with ``--model-path DIR`` when the model's files were fetched
for it, else ``--model-dir DIR``, the folder to fetch them into), with the Python of the model's
own environment or the platform's; or started ahead of need as a warm spare and given those
arguments later (``--spare``, see ``spare_worker``). Its standard input carries two lines: the model's load credential, then the TCP handshake's secret
(empty for a Unix socket); never arguments, which any user of the machine can read.
It loads the model first and only then listens, so a socket that accepts means a model that
answers. Agents spend most of their time waiting on LLM calls, and one slow request must not hold
up the others in the same process: a synchronous ``predict`` / ``predict_stream`` runs in a
thread pool, an async one (a coroutine function, an async generator) in the request's own task on
the event loop. Either way at most ``--concurrency`` requests run at once; the rest wait their turn.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from agentwharf import credentials
from agentwharf.errors import AgentwharfError, InvalidParameter, ModelError
from agentwharf.serving import protocol, transport
from agentwharf.serving.async_streams import pulled
from agentwharf.serving.frame_writer import CoalescingWriter
from agentwharf.serving.interfaces import INVOCATIONS, Call, InvalidRequest, ModelInterface, adapter_for, close
from agentwharf.serving.interfaces.base import NATIVE, aclose
from agentwharf.tracing import capture
from agentwharf.tracing import record as trace_record

log = logging.getLogger("agentwharf.worker")


#: Room for the frame's own header and the record's envelope inside ``protocol.MAX_FRAME``.
_MAX_ANSWER = protocol.MAX_FRAME - 1024


class WorkerServer:
    """Answers the gateway's frames with the model's output, and a trace record per request.

    Every REQUEST frame gets exactly one RECORD and one RESPONSE (or STREAM_END), whatever
    fails on the way: the gateway waits for them, and a request without its record would be
    an answer without a trace.
    """

    def __init__(self, adapter: ModelInterface, concurrency: int,
                 max_field_chars: int = trace_record.DEFAULT_MAX_FIELD_CHARS):
        self.adapter = adapter
        self.max_field_chars = max_field_chars
        # As many threads as requests may run: a request past the limit waits for a slot, never
        # for a thread. The pool starts threads only as requests need them.
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="predict")
        self.slots = asyncio.Semaphore(concurrency)
        self.cancelled: dict[tuple[int, int], threading.Event] = {}
        self._connections = 0

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Streams' frames leave once per turn of the loop, whole answers at once (frame_writer).
        streams = CoalescingWriter(writer)
        self._connections += 1
        conn_id = self._connections
        writer.write(protocol.encode(0, protocol.HELLO, orjson.dumps({"pid": os.getpid(), "kind": self.adapter.kind})))
        tasks: set[asyncio.Task] = set()
        try:
            while True:
                stream_id, kind, _status, payload = await protocol.read_frame(reader)
                if kind == protocol.REQUEST:
                    task = asyncio.create_task(self.handle_request(conn_id, stream_id, payload, writer, streams))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif kind == protocol.CANCEL:
                    if (flag := self.cancelled.get((conn_id, stream_id))) is not None:
                        flag.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the gateway closed the connection (restart or shutdown)
        except protocol.ProtocolError as error:
            log.error("the gateway sent a bad frame (%s); closing this connection", error)
        finally:
            for flag_key, flag in list(self.cancelled.items()):
                if flag_key[0] == conn_id:
                    flag.set()
            streams.close()  # what streams left pending, then the connection

    async def handle_request(self, conn_id: int, stream_id: int, payload: bytes, writer: asyncio.StreamWriter,
                             streams: CoalescingWriter | None = None) -> None:
        """Answer one request; ``streams`` carries a stream's frames (``writer`` if not given)."""
        streams = streams or writer
        start_ns = time.time_ns()
        meta, raw = {}, payload
        try:
            meta, raw = protocol.decode_request(payload)
            async with self.slots:
                await self._handle(conn_id, stream_id, meta, raw, writer, streams, start_ns)
        except Exception as failure:  # a platform bug: still answer, still record
            log.error("request %s failed inside the worker:\n%s", meta.get("request_id"), traceback.format_exc())
            error = AgentwharfError(f"The worker failed while handling the request: {type(failure).__name__}")
            # On the streams' writer: behind whatever frames a stream that failed midway left pending.
            self._send_record(streams, stream_id, meta, start_ns, _loads_or_text(raw), None, error.message, [])
            streams.write(protocol.encode(stream_id, protocol.RESPONSE, error.error_body(), error.http_status))

    async def _handle(self, conn_id, stream_id, meta, raw, writer, streams, start_ns) -> None:
        try:
            body = self._decode_body(raw)
            options = body.pop("databricks_options", None) or {}
            call = self.adapter.parse(body, meta.get("route", INVOCATIONS))
        except InvalidRequest as error:
            refused = InvalidParameter(str(error))
            self._send_record(writer, stream_id, meta, start_ns, _loads_or_text(raw), None, refused.message, [])
            writer.write(protocol.encode(stream_id, protocol.RESPONSE, refused.error_body(), refused.http_status))
            return
        if call.stream and self.adapter.async_stream and call.dialect is NATIVE:
            await self._stream_async(conn_id, stream_id, meta, call, streams, start_ns)
            return
        if call.stream:
            await self._stream(conn_id, stream_id, meta, call, streams, start_ns)
            return
        if self.adapter.async_predict:
            status, answer, record = await self._predict_async(meta, call, options, start_ns)
        else:
            loop = asyncio.get_running_loop()
            status, answer, record = await loop.run_in_executor(self.pool, self._predict, meta, call, options, start_ns)
        writer.write(protocol.encode(stream_id, protocol.RECORD, record) + protocol.encode(stream_id, protocol.RESPONSE, answer, status))

    def _predict(self, meta, call: Call, options, start_ns) -> tuple[int, bytes, bytes]:
        """Runs in a pool thread: the agent's answer, and the request's record with its trace."""
        with _user_credentials(meta):
            capture.begin()
            output, failure = self._answer(meta, call)
            traces = capture.take()
        return self._finish(meta, call, options, start_ns, output, failure, traces)

    async def _predict_async(self, meta, call: Call, options, start_ns) -> tuple[int, bytes, bytes]:
        """``_predict`` for an async ``predict``, awaited in this request's task."""
        with _user_credentials(meta):
            capture.begin()
            try:
                output = await self.adapter.apredict(call.request)
            except Exception as failure:
                output, failure = None, self._refusal(meta, failure)
            else:
                output, failure = self._shaped(meta, call, output)
            traces = capture.take()
        return self._finish(meta, call, options, start_ns, output, failure, traces)

    def _finish(self, meta, call: Call, options, start_ns, output, failure, traces) -> tuple[int, bytes, bytes]:
        """The status, the encoded answer and the request's record, from what the model did."""
        answer = b""
        if failure is None:
            answer, error = _encode_answer(output)
            if error is not None:
                output, failure = None, ModelError(error)
        record = self._build_record(meta, start_ns, call.recorded, output, failure.message if failure else None, traces)
        record_bytes = trace_record.encode(record)
        if failure is not None:
            return failure.http_status, failure.error_body(), record_bytes
        if options.get("return_trace"):
            answer, _ = _encode_answer(_with_trace(output, record))
        return 200, answer, record_bytes

    def _answer(self, meta, call: Call) -> tuple[Any, AgentwharfError | None]:
        """The model's output in the route's shape, or why there is none."""
        try:
            output = self.adapter.predict(call.request)
        except Exception as failure:
            return None, self._refusal(meta, failure)
        return self._shaped(meta, call, output)

    @staticmethod
    def _refusal(meta, failure: Exception) -> AgentwharfError:
        """What a failed ``predict`` answers (called in its ``except``, for the traceback)."""
        if isinstance(failure, InvalidRequest):  # the model's own signature refused the input (pyfunc)
            return InvalidParameter(str(failure))
        # The agent's own failure: report it, keep serving.
        log.error("predict failed for request %s:\n%s", meta.get("request_id"), traceback.format_exc())
        return ModelError(_agent_message(failure))

    @staticmethod
    def _shaped(meta, call: Call, output: Any) -> tuple[Any, AgentwharfError | None]:
        """The model's output in the route's shape, or why it cannot be."""
        try:
            return call.dialect.answer(output, meta), None
        except Exception as failure:  # an answer the route cannot carry (a malformed ChatAgent message, say)
            log.error("request %s: the answer does not convert for route %s:\n%s", meta.get("request_id"),
                      meta.get("route"), traceback.format_exc())
            return None, ModelError(f"The model's answer cannot be given on this route: {_agent_message(failure)}")

    def _build_record(self, meta, start_ns, inputs, outputs, error, traces) -> dict:
        return trace_record.build(
            name=f"/serving-endpoints/{meta.get('endpoint', '')}/invocations", start_ns=start_ns,
            inputs=inputs, outputs=outputs, error=error, agent_traces=traces, max_field_chars=self.max_field_chars,
            attributes={"agentwharf.endpoint": meta.get("endpoint"), "agentwharf.served_entity": meta.get("entity"),
                        "agentwharf.request_id": meta.get("request_id")},
        )

    def _send_record(self, writer, stream_id, meta, start_ns, inputs, outputs, error, traces) -> None:
        record = self._build_record(meta, start_ns, inputs, outputs, error, traces)
        writer.write(protocol.encode(stream_id, protocol.RECORD, trace_record.encode(record)))

    @staticmethod
    def _decode_body(raw: bytes) -> dict[str, Any]:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise InvalidRequest(f"Malformed JSON in request body: {error}") from None
        if not isinstance(body, dict):
            raise InvalidRequest(f"Request body must be a JSON object, got {type(body).__name__}")
        if not trace_record.representable(body):
            # Checked before the model runs: its trace and inference row could not hold it.
            raise InvalidRequest("Request body is nested too deeply to be recorded (at most 254 levels of arrays "
                                 "and objects)")
        return body

    async def _stream(self, conn_id, stream_id, meta, call: Call, writer, start_ns) -> None:
        loop = asyncio.get_running_loop()
        cancel = threading.Event()
        self.cancelled[(conn_id, stream_id)] = cancel
        writer.write(protocol.encode(stream_id, protocol.STREAM_START, b"", 200))

        def send(kind: int, payload: bytes) -> None:
            loop.call_soon_threadsafe(writer.write, protocol.encode(stream_id, kind, payload))

        def produce() -> None:
            with _user_credentials(meta):
                produce_as_caller()

        def produce_as_caller() -> None:
            # Runs in a pool thread; checks the cancel flag between events so a client that
            # went away frees this thread at the agent's next yield.
            traces = capture.begin()
            seen: list[Any] = []  # the model's own events, before the route reshapes them
            events = call.dialect.events(_observed(self._source(call, meta, loop, traces), seen), meta)
            error = None
            try:
                for event in events:
                    if cancel.is_set():
                        error = "The client disconnected before the stream ended"
                        break
                    data, error = _encode_answer(event)
                    if error is not None:
                        break
                    send(protocol.EVENT, data)
            except Exception as failure:
                log.error("predict_stream failed for request %s:\n%s", meta.get("request_id"), traceback.format_exc())
                error = _agent_message(failure)
            finally:
                close(events)
            # The assembled final output is what the trace and the inference table keep.
            record = self._build_record(meta, start_ns, call.recorded, self._assembled(seen), error, capture.take())
            send(protocol.RECORD, trace_record.encode(record))
            failed = error is not None and not cancel.is_set()
            send(protocol.STREAM_END, ModelError(error).error_body() if failed else b"")

        try:
            await loop.run_in_executor(self.pool, produce)
        except Exception as failure:  # the stream was cut by a platform bug: end it, recorded
            log.error("stream %s failed inside the worker:\n%s", meta.get("request_id"), traceback.format_exc())
            message = f"The worker failed while streaming: {type(failure).__name__}"
            send(protocol.RECORD, trace_record.encode(self._build_record(meta, start_ns, call.recorded, None, message, [])))
            send(protocol.STREAM_END, AgentwharfError(message).error_body())
        finally:
            self.cancelled.pop((conn_id, stream_id), None)

    def _source(self, call: Call, meta, loop, traces) -> Iterator[Any]:
        """The model's events as a plain iterator: an async agent's are advanced on ``loop``."""
        if not self.adapter.async_stream:
            return self.adapter.predict_stream(call.request)
        return pulled(self.adapter.apredict_stream(call.request), loop, lambda: _step_context(traces, meta))

    async def _stream_async(self, conn_id, stream_id, meta, call: Call, writer, start_ns) -> None:
        """``_stream`` for an async ``predict_stream`` on the native route: the agent's events are
        awaited in this request's task and written as they come, without a thread."""
        cancel = threading.Event()
        self.cancelled[(conn_id, stream_id)] = cancel
        writer.write(protocol.encode(stream_id, protocol.STREAM_START, b"", 200))
        seen: list[Any] = []
        error = None
        try:
            with _user_credentials(meta):
                capture.begin()
                error = await self._relay_async(stream_id, call, cancel, seen, writer)
                traces = capture.take()
            record = self._build_record(meta, start_ns, call.recorded, self._assembled(seen), error, traces)
        except Exception as failure:  # a platform bug: end the stream, recorded
            log.error("stream %s failed inside the worker:\n%s", meta.get("request_id"), traceback.format_exc())
            error = f"The worker failed while streaming: {type(failure).__name__}"
            record = self._build_record(meta, start_ns, call.recorded, None, error, [])
        finally:
            self.cancelled.pop((conn_id, stream_id), None)
        failed = error is not None and not cancel.is_set()
        writer.write(protocol.encode(stream_id, protocol.RECORD, trace_record.encode(record))
                     + protocol.encode(stream_id, protocol.STREAM_END, ModelError(error).error_body() if failed else b""))

    async def _relay_async(self, stream_id, call: Call, cancel: threading.Event, seen: list[Any], writer) -> str | None:
        """Write each of the agent's events as a frame; why the stream ended early, if it did."""
        events = self.adapter.apredict_stream(call.request)
        try:
            async for event in events:
                if cancel.is_set():
                    return "The client disconnected before the stream ended"
                seen.append(event)
                data, error = _encode_answer(event)
                if error is not None:
                    return error
                writer.write(protocol.encode(stream_id, protocol.EVENT, data))
        except Exception as failure:
            log.error("predict_stream failed for stream %s:\n%s", stream_id, traceback.format_exc())
            return _agent_message(failure)
        finally:
            await aclose(events)
        return None

    def _assembled(self, events: list[Any]) -> Any:
        try:
            return self.adapter.assemble(events)
        except Exception:  # events the model made up: keep them as they came
            log.warning("could not assemble a stream's events:\n%s", traceback.format_exc())
            return events


def _observed(events: Iterator[Any], seen: list[Any]) -> Iterator[Any]:
    """``events``, each also kept in ``seen``; closing this closes them."""
    try:
        for event in events:
            seen.append(event)
            yield event
    finally:
        close(events)


def _with_trace(output: Any, record: dict) -> Any:
    """The answer with ``databricks_output.trace``, as Databricks adds it for ``return_trace``."""
    extra = {"databricks_output": {"trace": _trace_json(record)}}
    return {**output, **extra} if isinstance(output, dict) else {"predictions": output, **extra}


@contextlib.contextmanager
def _step_context(traces: list[Any], meta: dict):
    """What one step of an async stream read from a thread runs in: the request's trace capture
    and credentials."""
    with capture.collecting(traces), _user_credentials(meta):
        yield


@contextlib.contextmanager
def _user_credentials(meta: dict):
    """The caller's on-behalf-of token, readable through ``agentwharf.credentials`` while the
    model handles this request (and only then)."""
    token = meta.get("user_token")
    if not token:
        yield
        return
    reset = credentials._set_user(credentials.Credentials(_PLATFORM_URL, token))
    try:
        yield
    finally:
        credentials._reset_user(reset)


_PLATFORM_URL = os.environ.get("MLFLOW_TRACKING_URI", "")


def _loads_or_text(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:10_000].decode(errors="replace")


def _trace_json(record: dict) -> dict:
    """The trace in MLflow's ``Trace.to_dict()`` shape, for ``return_trace``."""
    return {
        "info": {
            "trace_id": record["trace_id"],
            "request_time": record["start_ms"],
            "execution_duration_ms": record["duration_ms"],
            "state": record["state"],
            "trace_metadata": record["metadata"],
        },
        "data": {"spans": record["spans"]},
    }


def _encode_answer(value: Any) -> tuple[bytes, str | None]:
    """The model's answer (or one stream event) as JSON, or why it cannot be sent."""
    try:
        data = orjson.dumps(value, default=str)
    except TypeError as error:
        return b"", f"The model's answer cannot be encoded as JSON: {error}"
    if len(data) > _MAX_ANSWER:
        return b"", f"The model's answer is {len(data)} bytes, over the {_MAX_ANSWER} bytes one answer may have"
    return data, None


def _agent_message(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}" if str(error) else text


def _load(model_uri: str, load_token: str, model_path: str | None = None, model_dir: str | None = None) -> ModelInterface:
    """Fetch the model with the load credential (unless its files are already here), forget the
    credential, and only then import the model's code: agent code never runs while the
    credential is in this process.

    The files are fetched into ``model_dir`` (the supervisor removes it once this worker has
    stopped, even after a kill -9), or, without one (a Ray replica), a temporary folder this
    process removes when it exits. The model may read them for as long as it runs."""
    import mlflow.artifacts
    import mlflow.pyfunc

    started = time.monotonic()
    log.info("loading %s%s (Python %s)", model_uri, f" from {model_path}" if model_path else "", sys.executable)
    if load_token:
        os.environ["MLFLOW_TRACKING_TOKEN"] = load_token
    try:
        local = model_path or mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=_fetch_folder(model_dir))
        capture.pin_experiment()
    finally:
        os.environ.pop("MLFLOW_TRACKING_TOKEN", None)
    adapter = adapter_for(mlflow.pyfunc.load_model(local))
    capture.install()
    log.info("loaded %s (%s) in %.1fs", model_uri, adapter.kind, time.monotonic() - started)
    return adapter


def _fetch_folder(model_dir: str | None) -> str:
    """Where the model's files go: ``model_dir``, or a temporary folder removed at exit."""
    if model_dir:
        os.makedirs(model_dir, mode=0o700, exist_ok=True)
        return model_dir
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="agentwharf-model-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


async def _serve(args: argparse.Namespace, secret: str, adapter: ModelInterface) -> None:
    server = WorkerServer(adapter, args.concurrency, args.max_field_chars)
    listener, bound = await transport.listen(transport.parse_address(args.listen), server.handle_connection, secret)
    if args.ready_file:
        transport.write_ready_file(args.ready_file, bound)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("ready on %s", bound)
    async with listener:
        await stop.wait()
    server.pool.shutdown(wait=False, cancel_futures=True)


def _freeze_startup_objects() -> None:
    """Move everything imported so far (MLflow alone is ~150k objects) out of the garbage
    collector's view: a full collection over them pauses the process ~90 ms, which showed up
    as the serving p99."""
    import gc

    gc.collect()
    gc.freeze()


def main(argv: list[str] | None = None, handover: tuple[str, str] | None = None) -> None:
    """Run a worker. ``handover``: its (load credential, TCP secret) when it was a spare (they
    came with its assignment); otherwise they are read from stdin."""
    if argv is None:
        argv = sys.argv[1:]
    if argv == ["--spare"]:
        from agentwharf.serving.spare_worker import wait_for_assignment

        argv, handover = wait_for_assignment()
    parser = argparse.ArgumentParser(description="agentwharf model worker (started by the supervisor)")
    parser.add_argument("--listen", required=True, help="unix:/path or tcp://host:port (port 0: any free port)")
    parser.add_argument("--ready-file", help="Where to write the address bound, once listening (TCP port 0)")
    parser.add_argument("--model-uri", required=True)
    # Required: the launcher passes PlatformSettings.worker_concurrency, the one place it is set
    # (a worker in a model's environment cannot import the settings: no pydantic-settings there).
    parser.add_argument("--concurrency", type=int, required=True, help="requests run at once")
    parser.add_argument("--max-field-chars", type=int, default=trace_record.DEFAULT_MAX_FIELD_CHARS)
    parser.add_argument("--model-path", help="The model's files, already fetched (no credential is needed then)")
    parser.add_argument("--model-dir", help="Where to fetch the model's files (the supervisor removes it after the worker)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The supervisor writes the load credential and the TCP secret on stdin: never in argv,
    # which any user of the machine can read, nor in the environment, which every process the
    # model's code starts inherits.
    if handover is None:
        handover = (sys.stdin.readline().strip(), sys.stdin.readline().strip())
    load_token, secret = handover
    transport.parse_address(args.listen)  # a bad address fails before the model is loaded
    try:
        adapter = _load(args.model_uri, load_token, args.model_path, args.model_dir)
        _freeze_startup_objects()
    except Exception:
        # The supervisor shows the tail of this log to whoever deployed: make it the real error.
        log.error("failed to load %s:\n%s", args.model_uri, traceback.format_exc())
        sys.exit(3)
    try:
        import uvloop  # installed with uvicorn[standard]; a faster event loop for the frame relay

        uvloop.run(_serve(args, secret, adapter))
    except ImportError:
        asyncio.run(_serve(args, secret, adapter))


if __name__ == "__main__":
    main()
