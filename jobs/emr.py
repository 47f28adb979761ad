"""`python -m jobs emr-step`: upload the packaged artifacts and add a spark-submit step.

The step runs `spark-submit --deploy-mode cluster --archives env.tar.gz#environment main.py
<command> --config <config>` through command-runner.jar; `--print` shows it without calling AWS
(for pasting into EventBridge Scheduler, Step Functions or Airflow).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

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
    import boto3

    return boto3.session.Session().client(
        "emr",
        region_name=config.emr.region or config.s3.region,
        endpoint_url=config.emr.endpoint_url,
    )


def wait_for_step(client, cluster_id: str, step_id: str, poll: float, progress, sleep=time.sleep):
    """Our own loop: boto3's step_complete waiter gives up after 30 minutes."""
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


def add_emr_parser(sub, common) -> None:
    p = sub.add_parser(
        "emr-step",
        help="upload dist/ artifacts and add a spark-submit step to an EMR cluster",
        description="Upload dist/env.tar.gz, dist/main.py and the config to emr.artifacts_uri, "
        "then add a command-runner.jar spark-submit step. --print only shows the step JSON.",
    )
    p.add_argument("--cluster-id", required=False, metavar="J-XXXX")
    p.add_argument("--dist", default="dist", help="where `make package` put the artifacts")
    p.add_argument("--print", dest="print_only", action="store_true", help="print the step JSON")
    p.add_argument("--wait", action="store_true", help="follow the step to its end")
    common(p)


def cmd_emr_step(args) -> int:
    from .cli import _config

    config = _config(args)
    config_file = args.config or "conf/local.yaml"
    step = step_definition(config, config_file)
    if args.print_only:
        print(json.dumps([step], indent=2))
        return 0
    if not args.cluster_id:
        raise ConfigError("--cluster-id is required (or use --print)")
    art = upload(config, config_file, args.dist, Store(config.s3))
    client = emr_client(config)
    step_id = client.add_job_flow_steps(JobFlowId=args.cluster_id, Steps=[step])["StepIds"][0]
    print(f"added step {step_id} to {args.cluster_id} (artifacts under {config.emr.artifacts_uri})")
    print(json.dumps({"step_id": step_id, **art}))
    if not args.wait:
        return 0
    final = wait_for_step(client, args.cluster_id, step_id, config.emr.poll_seconds, print)
    state = final["Status"]["State"]
    if state != "COMPLETED":
        details = final["Status"].get("FailureDetails", {})
        reason = "; ".join(
            str(details[k]) for k in ("Reason", "Message", "LogFile") if k in details
        )
        raise JobError(f"step {step_id} ended {state}: {reason or 'no reason given'}")
    return 0
