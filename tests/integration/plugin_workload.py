"""One MLflow client process logging through the plugin for a while (run by test_client_plugin.py).

    python plugin_workload.py TRACKING_URI EXPERIMENT_ID SECONDS INTERVAL

The plugin is configured by the environment (MLFLOW_TRACKING_AUTH=mlflow-gate, MLFLOW_GATE_*).
Logs metric `step` = i at step i every INTERVAL seconds, then prints {"run_id", "logged"} as JSON.
Any failure ends the process with a traceback and a non-zero exit code.
"""

from __future__ import annotations

import json
import sys
import time

from mlflow.tracking import MlflowClient


def main(tracking_uri: str, experiment_id: str, seconds: float, interval: float) -> None:
    client = MlflowClient(tracking_uri=tracking_uri)
    run_id = client.create_run(experiment_id).info.run_id
    deadline = time.monotonic() + seconds
    logged = 0
    while time.monotonic() < deadline:
        client.log_metric(run_id, "step", logged, step=logged)
        logged += 1
        time.sleep(interval)
    client.set_terminated(run_id)
    print(json.dumps({"run_id": run_id, "logged": logged}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
