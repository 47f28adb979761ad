"""`python -m jobs emr-step`: upload the packaged artifacts and add a spark-submit step.

The step runs, through command-runner.jar::

    spark-submit --deploy-mode cluster --files <jobs.pex>,<job.yaml>
      --conf spark.pyspark.python=./jobs.pex ... <main.py> <command> --config job.yaml

``jobs.pex`` (``make package``) carries our code and every runtime dependency for CPython 3.11
on x86_64 and aarch64; the nodes' own ``/usr/bin/python3.11`` (EMR 7.1 and later) runs it, and
the cluster's Spark provides pyspark. Every artifact goes to a key named by its content
(``<artifacts_uri>/<kind>/<sha256 prefix>/<name>``), so a pending or scheduled step never sees
another submission's files. The config uploaded is the *resolved* one: ``--set`` overrides
applied and ``{date}``, ``{time}`` and ``{run_id}`` in output paths filled in at submission.
``--print`` uploads the same artifacts and prints the step instead of adding it, for a
scheduler (EventBridge Scheduler, Step Functions, Airflow) to submit every day: ``{run_id}`` is
filled (the submission), ``{date}`` and ``{time}`` are left for each run, from the logical date
the scheduler passes in the step (``--scheduler``) or else the run's start.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from . import aws
from .config import resolve_run, resolve_templates, submission_id
from .errors import ConfigError, JobError
from .storage import Location, Store, open_shard

PEX = "jobs.pex"
ENTRY = "main.py"
CONFIG = "job.yaml"
STEP_DONE = ("COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED")
MIN_RELEASE = (7, 1, 0)  # the first EMR release with /usr/bin/python3.11 on its nodes


@dataclass(frozen=True)
class Submission:
    """One submission's resolved config and the content-addressed place of each artifact."""

    id: str
    config: object  # the resolved JobConfig
    files: dict[str, tuple[str, bytes | Path]]  # kind → (s3 uri, content or file)

    def uri(self, kind: str) -> str:
        return self.files[kind][0]


def _digest(content: bytes | Path) -> str:
    h = hashlib.sha256()
    if isinstance(content, Path):
        with content.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    else:
        h.update(content)
    return h.hexdigest()[:20]


# --print --scheduler NAME: what the printed step passes as --logical-date, for that scheduler
# to fill each time it submits the step (None: the step's own start time, in UTC)
SCHEDULERS = {
    "eventbridge": "<aws.scheduler.scheduled-time>",  # EventBridge Scheduler's context attribute
    "stepfunctions": "$$.Execution.StartTime",  # the context object (Args.$ with States.Array)
    "airflow": "{{ ds }}",  # EmrAddStepsOperator's steps are templated
    "none": None,
}


def prepare(config, dist: str, now: datetime | None = None, scheduled: bool = False) -> Submission:
    """Check what cannot work on a cluster, resolve the config, and name every artifact.
    ``scheduled`` (a printed step, submitted again and again): ``{date}`` and ``{time}`` are
    left for each run to fill from its logical date; otherwise all is filled now."""
    emr = config.emr
    if not emr.artifacts_uri or Location.parse(emr.artifacts_uri).scheme != "s3":
        raise ConfigError("emr.artifacts_uri must be an s3:// prefix for the packaged artifacts")
    if emr.deploy_mode != "cluster":
        raise ConfigError(
            f"emr.deploy_mode {emr.deploy_mode!r}: only 'cluster' can work from the packaged "
            "artifact (in client mode the driver runs on the primary node's own Python, where "
            "the package is not installed)"
        )
    if config.training.backend == "local" and emr.command != "convert":
        raise ConfigError(
            "training.backend: local is the laptop stand-in, and the cluster artifact leaves "
            "out scikit-learn: on EMR use training.backend: sagemaker, or none, or "
            "emr.command: convert"
        )
    pex, entry = Path(dist) / PEX, Path(dist) / ENTRY
    for path in (pex, entry):
        if not path.is_file():
            raise ConfigError(f"{path} does not exist (run `make package` first)")
    now = now or datetime.now(timezone.utc)
    sub_id = submission_id(now)
    resolved = (
        resolve_templates(config, {"run_id": sub_id})
        if scheduled
        else resolve_run(config, now, sub_id)
    )
    text = f"# resolved by `emr-step` for submission {sub_id}\n" + yaml.safe_dump(
        resolved.to_dict(), sort_keys=False
    )
    base = Location.parse(emr.artifacts_uri)
    files = {}
    for kind, name, content in (
        ("pex", PEX, pex),
        ("entry", ENTRY, entry.read_bytes()),
        ("config", CONFIG, text.encode()),
    ):
        files[kind] = (base.join(f"{kind}/{_digest(content)}/{name}").uri, content)
    return Submission(sub_id, resolved, files)


def follows_outside(config) -> bool:
    """``run`` with SageMaker training: the step ends once the job is created (the driver
    does not follow it), so the cluster's step queue is never held while SageMaker trains;
    ``emr-step --wait``, ``attach`` or the scheduler follows the job."""
    return config.emr.command == "run" and config.training.backend == "sagemaker"


def step_args(config, sub: Submission, command: list[str] | None = None) -> list[str]:
    """command-runner.jar's arguments: spark-submit of the artifacts running ``command`` (by
    default emr.command, with --no-wait when the training is followed outside)."""
    emr = config.emr
    if command is None:
        command = [emr.command, *(["--no-wait"] if follows_outside(config) else [])]
    return [
        "spark-submit",
        "--deploy-mode", "cluster",
        "--files", f"{sub.uri('pex')},{sub.uri('config')}",
        "--conf", f"spark.pyspark.python=./{PEX}",
        # unpacked once per node, shared by the node's containers (pex makes it atomically)
        "--conf", f"spark.yarn.appMasterEnv.PEX_ROOT={emr.pex_root}",
        "--conf", f"spark.executorEnv.PEX_ROOT={emr.pex_root}",
        "--conf", "spark.yarn.maxAppAttempts=1",
        *emr.spark_submit_args,
        sub.uri("entry"),
        command[0], "--config", CONFIG, *command[1:],
    ]  # fmt: skip


def step_definition(config, sub: Submission, scheduler: str | None = None) -> dict:
    """The AddJobFlowSteps step: command-runner.jar running spark-submit on the artifacts;
    for a ``scheduler``, with its placeholder for the logical date."""
    emr = config.emr
    placeholder = SCHEDULERS[scheduler] if scheduler else None
    args = [*step_args(config, sub), *(["--logical-date"] if placeholder else [])]
    jar = {"Jar": "command-runner.jar", "Args": [*args, *([placeholder] if placeholder else [])]}
    if scheduler == "stepfunctions":  # a context path inside a list: only an intrinsic can
        jar = {
            "Jar": "command-runner.jar",
            "Args.$": f"States.Array({', '.join(map(asl_string, args))}, {placeholder})",
        }
    return {"Name": emr.step_name, "ActionOnFailure": emr.action_on_failure, "HadoopJarStep": jar}


def asl_string(text: str) -> str:
    """A string literal of Amazon States Language's intrinsic functions: ' { } \\ escaped."""
    return "'" + re.sub(r"(['{}\\])", r"\\\1", text) + "'"


def upload(sub: Submission, store: Store) -> None:
    """Put each artifact at its content-named key; one already there (same name, so the same
    bytes) is left as it is."""
    for uri, content in sub.files.values():
        loc = Location.parse(uri)
        if _present(store, loc):
            continue
        if isinstance(content, Path):  # the PEX: streamed as a multipart upload, not read whole
            with content.open("rb") as f, open_shard(loc, store.settings) as w:
                for block in iter(lambda: f.read(16 << 20), b""):
                    w.write(block)
        else:
            store.put(loc, content)


def _present(store: Store, loc: Location) -> bool:
    """Whether the artifact is there already. A principal without s3:ListBucket on the prefix
    gets 403 for a HEAD of a missing key (S3's HeadObject): that cannot tell, so it is uploaded
    (its key names its content: rewriting it changes nothing)."""
    try:
        return store.exists(loc)
    except Exception as exc:
        if aws.error_code(exc) in aws.DENIED:
            return False
        raise


def release(label: str) -> tuple[str, tuple[int, int, int]] | None:
    """("emr", (7, 5, 0)) for emr-7.5.0; ("emr-spark", (8, 0, 0)) for emr-spark-8.0.0."""
    m = re.fullmatch(r"(emr|emr-spark)-(\d+)\.(\d+)\.(\d+)", label or "")
    return (m.group(1), tuple(int(x) for x in m.groups()[1:])) if m else None


def check_release(client, cluster_id: str) -> str:
    """Refuse a cluster whose nodes cannot run the artifact, before anything is uploaded: the
    PEX runs on /usr/bin/python3.11 under Spark 3.5 (EMR 7.1+) or Spark 4.0 (emr-spark-8)."""
    label = _cluster(client, cluster_id).get("ReleaseLabel", "")
    found = release(label)
    ok = found is not None and (
        (found[0] == "emr" and MIN_RELEASE <= found[1] < (8, 0, 0))
        or (found[0] == "emr-spark" and (8, 0, 0) <= found[1] < (9, 0, 0))
    )
    if not ok:
        raise ConfigError(
            f"cluster {cluster_id} runs {label or 'an unknown release'}: the packaged artifact "
            "needs EMR 7.1.0 or a later 7.x release (Spark 3.5 with /usr/bin/python3.11 on every "
            "node; emr-7.0.0 has only Python 3.9), or emr-spark-8.x (Spark 4.0)"
        )
    return label


def _cluster(client, cluster_id: str) -> dict:
    return client.describe_cluster(ClusterId=cluster_id)["Cluster"]


APPLICATION = re.compile(r"\bapplication_\d+_\d+\b")


def driver_error(store: Store, log_uri: str | None, cluster_id: str, step_id: str) -> str:
    """Where a failed step's own error is, and the line itself when it can be read. In
    cluster mode the driver runs in YARN's application master, whose stderr (our one-line
    error, the progress lines) EMR uploads to ``<LogUri>/<cluster>/containers/<app>/<AM
    container>/stderr.gz``; the step's own stderr holds spark-submit's reports, which name the
    application. EMR uploads logs every few minutes: one not there yet is named, not read."""
    if not log_uri:
        return (
            "the cluster has no LogUri: the driver's log is in YARN on the cluster (`yarn logs "
            "-applicationId <id>` on the primary node; the step's stderr names the id)"
        )
    base = Location.parse(re.sub(r"^s3[na]?://", "s3://", log_uri)).join(cluster_id)
    step_log = base.join("steps", step_id, "stderr.gz")
    try:
        if not store.exists(step_log):
            return (
                f"the step's log is not uploaded yet: {step_log.uri} names the YARN "
                f"application, whose driver log goes under {base.uri}/containers/"
            )
        app = APPLICATION.search(_gunzipped(store, step_log))
        if app is None:
            return f"the step failed before YARN ran it; its log: {step_log.uri}"
        folder = base.join("containers", app.group(0))
        logs = sorted(loc for loc, _ in store.list(folder) if loc.key.endswith("/stderr.gz"))
        if not logs:
            return f"the driver's log is not uploaded yet; it will be under {folder.uri}/"
        master = logs[0]  # the first container of the first (only) attempt: the driver
        said = [ln for ln in _gunzipped(store, master).splitlines() if ln.startswith("error: ")]
        where = f"the driver's log: {master.uri}"
        return f"the driver said: {said[-1]} ({where})" if said else where
    except Exception as exc:
        if aws.describe_failure(exc) is None and not isinstance(exc, JobError):
            raise
        return f"the driver's log is under {base.uri}/containers/ (not read: {exc})"


def _gunzipped(store: Store, loc: Location) -> str:
    import gzip

    return gzip.decompress(store.get(loc)).decode("utf-8", "replace")


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


def describe(sub: Submission) -> dict:
    """What a submission recorded: where its config, code and output are."""
    return {
        "submission": sub.id,
        "config": sub.uri("config"),
        "pex": sub.uri("pex"),
        "entry": sub.uri("entry"),
        "output_path": sub.config.output.path,
    }


def print_step(config, dist: str, scheduler: str = "none", progress=print) -> dict:
    """Upload the artifacts and print the step JSON, for a scheduler to submit every day:
    each run fills ``{date}`` from the logical date the scheduler passes (or its start)."""
    sub = prepare(config, dist, scheduled=True)
    upload(sub, Store(config.s3))
    step = step_definition(config, sub, scheduler)
    progress(json.dumps([step], indent=2))
    return describe(sub)


def submit(
    config, cluster_id: str, dist: str, wait: bool, progress=print, now: datetime | None = None
):
    """Check the cluster, upload the artifacts, add the step, and (``wait``) follow it;
    JobError if it fails. Returns the submission (its resolved config names the run)."""
    client = emr_client(config)
    label = check_release(client, cluster_id)
    sub = prepare(config, dist, now)
    upload(sub, Store(config.s3))
    step = step_definition(config, sub)
    step_id = client.add_job_flow_steps(JobFlowId=cluster_id, Steps=[step])["StepIds"][0]
    progress(f"added step {step_id} to {cluster_id} ({label}); output {sub.config.output.path}")
    progress(json.dumps({"step_id": step_id, **describe(sub)}))
    if not wait:
        return sub
    final = wait_for_step(client, cluster_id, step_id, config.emr.poll_seconds, progress)
    state = final["Status"]["State"]
    if state != "COMPLETED":
        details = final["Status"].get("FailureDetails", {})
        reason = "; ".join(
            str(details[k]) for k in ("Reason", "Message", "LogFile") if k in details
        )
        log_uri = _cluster(client, cluster_id).get("LogUri")
        driver = driver_error(Store(config.s3), log_uri, cluster_id, step_id)
        raise JobError(f"step {step_id} ended {state}: {reason or 'no reason given'}; {driver}")
    return sub
