"""The Ray runtime's pure parts: how a served version maps onto Ray Serve, and the frames a
replica hands back (the cluster itself is in tests/integration/test_ray_runtime.py)."""

from __future__ import annotations

import asyncio

from agentwharf.serving import protocol
from agentwharf.serving.ray_replica import FrameQueue, frame_kind
from agentwharf.serving.ray_runtime import application_name, deployment_options, replica_environment
from agentwharf.serving.supervisor import WorkerSpec


def _spec(**given) -> WorkerSpec:
    return WorkerSpec(**{"key": "agents_main-x/main-x_1", "model_uri": "models:/main.x/1", "replicas": 2, **given})


def test_workload_replicas_become_autoscaling_bounds():
    options = deployment_options(_spec(), threads=16, replica_cpus=0.5, base_env={}, idle_seconds=30)
    scaling = options["autoscaling_config"]
    # As many replicas as local worker processes, always (the version does not scale to zero).
    assert (scaling["min_replicas"], scaling["max_replicas"], scaling["initial_replicas"]) == (2, 2, 2)
    assert scaling["look_back_period_s"] == 30  # Ray's own default when the idle time is longer
    assert scaling["target_ongoing_requests"] == 2 and options["max_ongoing_requests"] == 16
    assert options["ray_actor_options"]["num_cpus"] == 0.5
    # A model that fails to load fails the deploy on its first try, as with local workers.
    assert options["max_constructor_retry_count"] == 1


def test_scale_to_zero_lets_ray_go_to_no_replica():
    options = deployment_options(_spec(scale_to_zero=True, replicas=4), threads=1024, replica_cpus=1, base_env={},
                                 idle_seconds=5)
    assert (options["autoscaling_config"]["min_replicas"], options["autoscaling_config"]["max_replicas"]) == (0, 4)
    assert options["autoscaling_config"]["target_ongoing_requests"] == 128
    assert options["autoscaling_config"]["downscale_to_zero_delay_s"] == 5
    # Ray's load window is no longer than the idle time, so the version goes idle when it says.
    assert options["autoscaling_config"]["look_back_period_s"] == 5


def test_a_replica_gets_the_workers_variables_not_the_platform_machines():
    base = {"MLFLOW_TRACKING_URI": "http://p:8710", "PATH": "/usr/bin", "HOME": "/root", "VIRTUAL_ENV": "/v",
            "LD_PRELOAD": "x", "RAY_ADDRESS": "a", "OPENAI_API_BASE": "http://llm"}
    env = replica_environment(base, _spec(env=(("AGENTWHARF_SERVED_ENTITY", "main-x_1"),)))
    assert env == {"MLFLOW_TRACKING_URI": "http://p:8710", "OPENAI_API_BASE": "http://llm",
                   "AGENTWHARF_SERVED_ENTITY": "main-x_1"}


def test_application_names_are_ray_safe_and_distinct():
    assert application_name("agents_main-x/main-x_1") == "aw-agents_main-x--main-x_1"
    assert application_name("a/b c") != application_name("a/b_c")


def test_the_frames_a_worker_writes_at_once_are_handed_back_one_by_one():
    async def run():
        out = FrameQueue()
        out.write(protocol.encode(7, protocol.RECORD, b"record") + protocol.encode(7, protocol.RESPONSE, b"{}", 200))
        return [await out.frames.get() for _ in range(2)]

    record, response = asyncio.run(run())
    assert frame_kind(record) == protocol.RECORD and record.endswith(b"record")
    assert frame_kind(response) == protocol.RESPONSE and protocol.HEADER.unpack_from(response)[3] == 200
