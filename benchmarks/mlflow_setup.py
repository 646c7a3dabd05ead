"""MLflow client work the harness needs, run in a subprocess so the harness itself never
imports MLflow (no background tracing threads competing with wrk for the CPUs).

    python mlflow_setup.py --tracking-uri URI --experiment NAME [--artifact-location URI]
                           [--log-echo] [--register NAME] [--agent FILE]

Prints one JSON line: ``{"experiment_id", "model_uri", "artifact_path", "version"}`` (the last
three only when asked for).
"""

import argparse
import json
from pathlib import Path

ECHO_AGENT = Path(__file__).resolve().parent.parent / "examples" / "echo" / "agent.py"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--experiment", required=True)
    parser.add_argument("--artifact-location")
    parser.add_argument("--log-echo", action="store_true")
    parser.add_argument("--register")
    parser.add_argument("--agent", type=Path, default=ECHO_AGENT, help="the models-from-code file to log (the EchoAgent)")
    args = parser.parse_args()

    import mlflow

    mlflow.set_tracking_uri(args.tracking_uri)
    experiment = mlflow.get_experiment_by_name(args.experiment)
    experiment_id = (
        experiment.experiment_id
        if experiment
        else mlflow.create_experiment(args.experiment, artifact_location=args.artifact_location)
    )
    out = {"experiment_id": experiment_id}
    if args.log_echo or args.register:
        mlflow.set_experiment(experiment_id=experiment_id)
        info = mlflow.pyfunc.log_model(name="agent", python_model=str(args.agent), pip_requirements=["mlflow"])
        out.update(model_uri=info.model_uri, artifact_path=info.artifact_path)
        if args.register:
            out["version"] = str(mlflow.register_model(info.model_uri, args.register).version)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
