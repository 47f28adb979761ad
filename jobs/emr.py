"""`python -m jobs emr-step`: upload the packaged artifacts and add a spark-submit step.

The step runs `spark-submit --deploy-mode cluster --archives env.tar.gz#environment main.py
<command> --config <config>` through command-runner.jar; `--print` shows it without calling AWS
(for pasting into EventBridge Scheduler, Step Functions or Airflow).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from . import aws
from .errors import ConfigError, JobError
from .storage import Location, Store

ENV = "env.tar.gz"
ENTRY = "main.py"
STEP_DONE = ("COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED")


def _artifacts(config, config_file: str) -> dict[str, str]:
    emr = config.emr
    if not emr.artifacts_uri or Location.parse(emr.artifacts_uri).scheme != "s3":
        raise ConfigError("emr.artifacts_uri must be an s3:// prefix for the packaged artifacts")
    base = Location.parse(emr.artifacts_uri)
    return {
        "env": base.join(ENV).uri,
        "entry": base.join(ENTRY).uri,
        "config": base.join(Path(config_file).name).uri,
    }


def step_definition(config, config_file: str) -> dict:
    """The AddJobFlowSteps step: command-runner.jar running spark-submit on the artifacts."""
    emr = config.emr
    art = _artifacts(config, config_file)
    python = "./environment/bin/python"
    args = [
        "spark-submit",
        "--deploy-mode", emr.deploy_mode,
        "--archives", f"{art['env']}#environment",
        "--conf", f"spark.yarn.appMasterEnv.PYSPARK_PYTHON={python}",
        "--conf", f"spark.executorEnv.PYSPARK_PYTHON={python}",
        "--conf", "spark.yarn.maxAppAttempts=1",
        "--files", art["config"],
        *emr.spark_submit_args,
        art["entry"],
        emr.command, "--config", Path(config_file).name,
    ]  # fmt: skip
    return {
        "Name": emr.step_name,
        "ActionOnFailure": emr.action_on_failure,
        "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args},
    }


def upload(config, config_file: str, dist: str, store: Store) -> dict[str, str]:
    art = _artifacts(config, config_file)
    sources = {"env": Path(dist) / ENV, "entry": Path(dist) / ENTRY, "config": Path(config_file)}
    for what, path in sources.items():
        if not path.is_file():
            hint = " (run `make package` first)" if what != "config" else ""
            raise ConfigError(f"{path} does not exist{hint}")
    for what, path in sources.items():
        store.put(Location.parse(art[what]), path.read_bytes())
    return art


def emr_client(config):
    return aws.client("emr", config.emr.region or config.s3.region, config.emr.endpoint_url)


def wait_for_step(client, cluster_id: str, step_id: str, poll: float, progress, sleep=time.sleep):
    """Our own loop, so every state change is printed as it happens (boto3's ``step_complete``
    waiter reports nothing until it ends, and by default stops after 30 s × 60)."""
    start, last = time.monotonic(), None
    while True:
        step = client.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]
        state = step["Status"]["State"]
        if state != last:
            progress(f"[{time.monotonic() - start:6.0f}s] step {step_id}: {state}")
            last = state
        if state in STEP_DONE:
            return step
        sleep(poll)


def submit(config, config_file: str, cluster_id: str, dist: str, wait: bool, progress=print):
    """Upload the artifacts, add the step, and (``wait``) follow it; JobError if it fails."""
    step = step_definition(config, config_file)
    art = upload(config, config_file, dist, Store(config.s3))
    client = emr_client(config)
    step_id = client.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])["StepIds"][0]
    progress(f"added step {step_id} to {cluster_id} (artifacts under {config.emr.artifacts_uri})")
    progress(json.dumps({"step_id": step_id, **art}))
    if not wait:
        return
    final = wait_for_step(client, cluster_id, step_id, config.emr.poll_seconds, progress)
    state = final["Status"]["State"]
    if state != "COMPLETED":
        details = final["Status"].get("FailureDetails", {})
        reason = "; ".join(
            str(details[k]) for k in ("Reason", "Message", "LogFile") if k in details
        )
        raise JobError(f"step {step_id} ended {state}: {reason or 'no reason given'}")
