"""EMR: the step JSON, adding it to a cluster on the moto server, following it."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import boto3
import numpy as np
import pytest
import yaml
from botocore.stub import Stubber
from conftest import REPO
from faultproxy import Fault
from helpers import s3_objects, write_columns

from jobs.cli import main
from jobs.config import load_config
from jobs.emr import driver_error, wait_for_step
from jobs.storage import Store
from jobs.training.sagemaker import follow_run

CONF = str(REPO / "conf" / "emr.yaml")


def _dist(tmp_path, pex=b"pex bytes"):
    dist = tmp_path / "dist"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "jobs.pex").write_bytes(pex)
    (dist / "main.py").write_text("print('entry')\n")
    return dist


def _cluster(moto_server, release="emr-7.5.0"):
    emr = boto3.client("emr", endpoint_url=moto_server, region_name="us-east-1")
    return emr, emr.run_job_flow(
        Name="c", ReleaseLabel=release, Instances={"MasterInstanceType": "m5.xlarge",
        "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True}, JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
    )["JobFlowId"]  # fmt: skip


def _sets(moto_server, bucket, *more):
    sets = [
        f"emr.artifacts_uri=s3://{bucket}/artifacts",
        f"emr.endpoint_url={moto_server}",
        f"s3.endpoint_url={moto_server}",
        "s3.sse=AES256",
        "s3.kms_key_id=",
        *more,
    ]
    return [a for s in sets for a in ("--set", s)]


def _object(s3, uri):
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.mark.aws
def test_print_uploads_the_resolved_config_it_references(moto_server, bucket, tmp_path, capsys):
    """--print as a scheduler uses it: --set overrides and the output template are in the
    config the step references; every artifact sits at a key named by its content."""
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    dist = _dist(tmp_path)
    out = f"s3://{bucket}/shards/{{date}}/{{run_id}}"
    argv = ["emr-step", "--print", "--config", CONF, "--dist", str(dist)]
    argv += _sets(moto_server, bucket, f"output.path={out}", "output.max_shard_mb=77")
    assert main(argv) == 0
    captured = capsys.readouterr()
    (step,) = json.loads(captured.out)
    recorded = json.loads(captured.err.strip().splitlines()[-1])
    args = step["HadoopJarStep"]["Args"]
    assert args[:3] == ["spark-submit", "--deploy-mode", "cluster"]
    pex_uri, config_uri = args[args.index("--files") + 1].split(",")
    assert "spark.pyspark.python=./jobs.pex" in args
    # unpacked once per node (every container of it shares the copy), not once per container
    assert "spark.executorEnv.PEX_ROOT=/tmp/sagemaker-shards-pex" in args
    assert "spark.yarn.appMasterEnv.PEX_ROOT=/tmp/sagemaker-shards-pex" in args
    # run with SageMaker: the step ends once the job is created (the cluster is not held)
    assert args[-5:] == [recorded["entry"], "run", "--config", "job.yaml", "--no-wait"]
    assert (pex_uri, config_uri) == (recorded["pex"], recorded["config"])
    uploaded = yaml.safe_load(_object(s3, config_uri))
    # each scheduler's placeholder for the logical date, where that scheduler fills it
    for scheduler, tail in (("eventbridge", "<aws.scheduler.scheduled-time>"),
                            ("airflow", "{{ ds }}")):  # fmt: skip
        assert main(["emr-step", "--print", "--scheduler", scheduler, *argv[2:]]) == 0
        (printed,) = json.loads(capsys.readouterr().out)
        assert printed["HadoopJarStep"]["Args"][-2:] == ["--logical-date", tail]
    assert main(["emr-step", "--print", "--scheduler", "stepfunctions", *argv[2:]]) == 0
    (printed,) = json.loads(capsys.readouterr().out)
    listed = printed["HadoopJarStep"]["Args.$"]  # a context path inside a list: an intrinsic
    assert listed.startswith("States.Array('spark-submit', '--deploy-mode', 'cluster', ")
    assert listed.endswith(", '--logical-date', $$.Execution.StartTime)")
    # one printed step serves every day: {run_id} is the submission's, {date} each run's
    resolved = f"s3://{bucket}/shards/{{date}}/{recorded['submission']}"
    assert uploaded["output"]["path"] == recorded["output_path"] == resolved
    assert uploaded["output"]["max_shard_mb"] == 77
    # the uploaded file is a config the job reads back to the same settings
    (tmp_path / "job.yaml").write_bytes(_object(s3, config_uri))
    again = load_config(tmp_path / "job.yaml")
    assert again.to_dict() == uploaded
    for uri in (pex_uri, config_uri, recorded["entry"]):
        digest = uri.rsplit("/", 2)[1]
        assert hashlib.sha256(_object(s3, uri)).hexdigest().startswith(digest)
    assert _object(s3, pex_uri) == b"pex bytes"


@pytest.mark.aws
def test_a_submitter_that_may_not_list_uploads_and_a_denied_put_is_one_line(
    moto_server, proxy, bucket, tmp_path, capsys
):
    """Without s3:ListBucket, S3 answers a HEAD of a missing key with 403 (HeadObject's
    documentation), not 404: the artifacts are uploaded all the same. A permission that is
    missing altogether is one line naming the call, exit 2."""
    emr, cluster = _cluster(moto_server)
    proxy.add(Fault("HeadObject", "deny", times=1000))
    argv = ["emr-step", "--cluster-id", cluster, "--config", CONF, "--dist", str(_dist(tmp_path))]
    argv += _sets(moto_server, bucket, f"s3.endpoint_url={proxy.url}")
    assert main(argv) == 0, capsys.readouterr().err
    recorded = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    assert _object(s3, recorded["pex"]) == b"pex bytes"
    assert len(proxy.ops("HeadObject")) == 3
    assert len(emr.list_steps(ClusterId=cluster)["Steps"]) == 1

    proxy.add(Fault("PutObject", "deny", times=1000))
    assert main(argv + ["--set", "output.max_shard_mb=99"]) == 2  # a new config: a new key
    err = capsys.readouterr().err
    assert err.startswith(
        "error: AWS refused PutObject (AccessDenied: Access Denied); the "
        "principal lacks a permission: `python -m jobs iam-policy"
    ), err
    assert len(err.strip().splitlines()) == 1 and "unexpected" not in err
    assert len(emr.list_steps(ClusterId=cluster)["Steps"]) == 1  # no step added


@pytest.mark.aws
def test_two_submissions_never_share_a_key_for_different_content(
    moto_server, bucket, tmp_path, capsys
):
    emr, cluster = _cluster(moto_server)
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    seen: dict[str, bytes] = {}
    for i, pex in enumerate([b"pex one", b"pex one", b"pex two"]):
        dist = _dist(tmp_path / str(i), pex)
        argv = ["emr-step", "--cluster-id", cluster, "--config", CONF, "--dist", str(dist)]
        argv += _sets(moto_server, bucket, f"output.path=s3://{bucket}/out/{{run_id}}")
        assert main(argv) == 0
        recorded = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        for kind in ("pex", "entry", "config"):
            body = _object(s3, recorded[kind])
            assert seen.setdefault(recorded[kind], body) == body
    steps = emr.list_steps(ClusterId=cluster)["Steps"]
    configs = [s["Config"]["Args"][s["Config"]["Args"].index("--files") + 1] for s in steps]
    assert len(set(configs)) == 3  # each run's own output path: three configs, three keys
    pexes = {c.split(",")[0] for c in configs}
    assert len(pexes) == 2  # same bytes, same key; new bytes, new key


@pytest.mark.aws
@pytest.mark.parametrize("release", ["emr-7.1.0", "emr-7.5.0", "emr-spark-8.0.0"])
def test_step_is_added_to_a_cluster_with_its_arguments(
    moto_server, bucket, tmp_path, capsys, release
):
    emr, cluster = _cluster(moto_server, release)
    argv = ["emr-step", "--cluster-id", cluster, "--config", CONF, "--dist", str(_dist(tmp_path))]
    assert main(argv + _sets(moto_server, bucket)) == 0
    recorded = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    steps = emr.list_steps(ClusterId=cluster)["Steps"]
    (step,) = [s for s in steps if s["Name"] == "mnist-shards-and-train"]
    args = step["Config"]["Args"]
    assert step["Config"]["Jar"] == "command-runner.jar"
    assert args[args.index("--files") + 1] == f"{recorded['pex']},{recorded['config']}"
    # run with SageMaker: the step ends once the job is created (the cluster is not held)
    assert args[-5:] == [recorded["entry"], "run", "--config", "job.yaml", "--no-wait"]


@pytest.mark.aws
@pytest.mark.parametrize("release", ["emr-7.0.0", "emr-6.15.0", "emr-spark-9.0.0"])
def test_a_cluster_that_cannot_run_the_artifact_is_refused_before_upload(
    moto_server, bucket, tmp_path, capsys, release
):
    emr, cluster = _cluster(moto_server, release)
    argv = ["emr-step", "--cluster-id", cluster, "--config", CONF, "--dist", str(_dist(tmp_path))]
    assert main(argv + _sets(moto_server, bucket)) == 2
    err = capsys.readouterr().err
    assert f"runs {release}" in err and "needs EMR 7.1.0" in err and "emr-spark-8" in err
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert not emr.list_steps(ClusterId=cluster)["Steps"]


@pytest.mark.aws
def test_client_mode_and_unknown_templates_are_refused(moto_server, bucket, tmp_path, capsys):
    argv = ["emr-step", "--print", "--config", CONF, "--dist", str(_dist(tmp_path))]
    assert main(argv + _sets(moto_server, bucket, "emr.deploy_mode=client")) == 2
    assert "only 'cluster' can work" in capsys.readouterr().err
    bad = f"output.path=s3://{bucket}/out/{{day}}"
    assert main(argv + _sets(moto_server, bucket, bad)) == 2
    assert "unknown template {day}" in capsys.readouterr().err
    # the cluster artifact has no scikit-learn: the local stand-in trainer cannot run there
    assert main(argv + _sets(moto_server, bucket, "training.backend=local")) == 2
    assert "the cluster artifact leaves out scikit-learn" in capsys.readouterr().err


@pytest.mark.aws
def test_missing_package_is_a_clear_error(moto_server, bucket, tmp_path, capsys):
    argv = ["emr-step", "--print", "--config", CONF, "--dist", str(tmp_path)]
    assert main(argv + _sets(moto_server, bucket)) == 2
    assert "jobs.pex does not exist (run `make package` first)" in capsys.readouterr().err


@pytest.mark.aws
def test_wait_follows_the_step_to_its_failure_reason(moto_server):
    emr = boto3.client("emr", endpoint_url=moto_server, region_name="us-east-1")

    def step(state, **status):
        created = {"CreationDateTime": datetime(2026, 1, 1, tzinfo=timezone.utc)}
        return {
            "Step": {
                "Id": "s-1",
                "Name": "n",
                "Status": {"State": state, **status, "Timeline": created},
            }
        }

    lines = []
    with Stubber(emr) as stub:
        stub.add_response("describe_step", step("PENDING"))
        stub.add_response("describe_step", step("RUNNING"))
        stub.add_response("describe_step", step("RUNNING"))
        failure = {"Reason": "Step failed", "Message": "exit code 2", "LogFile": "s3://logs/s-1/"}
        stub.add_response("describe_step", step("FAILED", FailureDetails=failure))
        final = wait_for_step(emr, "j-1", "s-1", 0, lines.append, sleep=lambda s: None)
    assert final["Status"]["FailureDetails"]["Message"] == "exit code 2"
    assert [line.split()[-1] for line in lines] == ["PENDING", "RUNNING", "FAILED"]


@pytest.mark.aws
def test_a_failed_steps_own_error_line_is_read_from_the_drivers_log(
    moto_server, bucket, s3_settings
):
    """Where EMR puts a cluster-mode step's logs under the cluster's LogUri: the step's
    stderr (spark-submit's reports, naming the YARN application) and each container's; the
    application master's container is the driver, whose stderr holds our one error line."""
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    store = Store(s3_settings)
    log_uri = f"s3n://{bucket}/elasticmapreduce/"  # as DescribeCluster gives it
    cluster, step = "j-2X0TJ4AYW2U99", "s-1ABCDEF"

    def put(key, text):
        s3.put_object(Bucket=bucket, Key=f"elasticmapreduce/{cluster}/{key}",
                      Body=gzip.compress(text.encode()))  # fmt: skip

    assert "no LogUri" in driver_error(store, None, cluster, step)
    pending = driver_error(store, log_uri, cluster, step)
    assert pending.startswith("the step's log is not uploaded yet: ") and (
        f"s3://{bucket}/elasticmapreduce/{cluster}/steps/{step}/stderr.gz" in pending)  # fmt: skip
    app = "application_1765000000000_0003"
    put(
        f"steps/{step}/stderr.gz",
        f"26/12/06 07:00:01 INFO Client: Submitted application {app}\n"
        f"Exception in thread main: Application {app} finished with failed status\n",
    )
    assert driver_error(store, log_uri, cluster, step) == (
        f"the driver's log is not uploaded yet; it will be under "
        f"s3://{bucket}/elasticmapreduce/{cluster}/containers/{app}/"
    )
    am = f"containers/{app}/container_e01_1765000000000_0003_01_000001/stderr.gz"
    put(
        am,
        "07:00:09 INFO stage 1/2: conversion (Spark)\nerror: features: 1 row in "
        "s3://b/in/part-3.parquet with null, NaN or infinite values\n",
    )
    put(f"containers/{app}/container_e01_1765000000000_0003_01_000002/stderr.gz", "executor\n")
    assert driver_error(store, log_uri, cluster, step) == (
        "the driver said: error: features: 1 row in s3://b/in/part-3.parquet with null, NaN or "
        f"infinite values (the driver's log: s3://{bucket}/elasticmapreduce/{cluster}/{am})"
    )


@pytest.mark.spark
@pytest.mark.aws
def test_one_printed_step_serves_every_day_and_a_retry_never_trains_twice(
    spark, moto_server, bucket, tmp_path, capsys
):
    """A schedule, simulated: the step printed once (for Airflow: `{{ ds }}` in its args) and
    run as the cluster runs it, with the date the scheduler fills in, for three days; day 2
    retried once after its commit (its first attempt died before training) and once after
    its job was created; a backfill of an earlier day. `run --no-wait` commits, creates the
    job and ends; following it happens outside (`attach`, as the scheduler's wait would be
    followed by it), which moves "latest" and applies output.keep: 3."""
    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")
    rng = np.random.default_rng(3)
    src = write_columns(tmp_path / "in", rng.random((600, 8), dtype=np.float32),
                        rng.integers(0, 2, 600), files=2)  # fmt: skip
    for f in sorted(Path(src).iterdir()):
        s3.upload_file(str(f), bucket, f"in/{f.name}")
    s3.put_object(Bucket=bucket, Key="daily/README.txt", Body=b"the team's notes")  # foreign
    argv = ["emr-step", "--print", "--scheduler", "airflow", "--config", CONF,
            "--dist", str(_dist(tmp_path))]  # fmt: skip
    argv += _sets(
        moto_server, bucket, f"input.paths={{train: 's3://{bucket}/in/'}}",
        f"output.path=s3://{bucket}/daily/{{date}}", "output.mode=resume", "output.keep=3",
        "training.sagemaker.role_arn=arn:aws:iam::123456789012:role/SageMakerRole",
        f"training.sagemaker.endpoint_url={moto_server}", "training.sagemaker.poll_seconds=0",
        "training.hyperparameters={epochs: 2, mini_batch_size: 100}",
    )  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    (step,) = json.loads(captured.out)
    recorded = json.loads(captured.err.strip().splitlines()[-1])
    args = step["HadoopJarStep"]["Args"]
    assert args[-2:] == ["--logical-date", "{{ ds }}"]
    job_yaml = tmp_path / "job.yaml"
    job_yaml.write_bytes(_object(s3, recorded["config"]))
    sm = boto3.client("sagemaker", endpoint_url=moto_server, region_name="us-east-1")

    def jobs():
        return {j["TrainingJobName"] for j in sm.list_training_jobs(MaxResults=100)[
            "TrainingJobSummaries"]}  # fmt: skip

    def step_for(ds, command=None):  # what Airflow renders and the cluster runs
        cmd = args[args.index(recorded["entry"]) + 1 :]
        cmd = [str(job_yaml) if a == "job.yaml" else ds if a == "{{ ds }}" else a for a in cmd]
        if command:  # another command of the same step (convert takes no --no-wait)
            cmd = [command, *(a for a in cmd[1:] if a != "--no-wait")]
        else:  # as `schedule`'s state machine runs it: it reads the job from the handoff
            cmd += ["--handoff", f"s3://{bucket}/daily/_schedule/{ds}.json"]
        code = main(cmd)
        out = capsys.readouterr()
        assert code == 0, out.err
        return out

    before = jobs()
    first = step_for("2026-12-01")
    (name,) = jobs() - before
    day1 = f"s3://{bucket}/daily/2026-12-01"
    assert json.loads(_object(s3, f"{day1}/training/{name}.json"))["status"] == "InProgress"
    assert f"started training job {name}" in first.out  # and did not follow it
    assert "Spark stopped" not in first.err  # the test's shared session is not the step's
    cfg = load_config(job_yaml)
    result = follow_run(cfg, Store(cfg.s3), day1, progress=lambda s: None)  # emr-step --wait's
    assert result["job_name"] == name and result["status"] == "Completed"
    models = {}

    def follow(day):  # the scheduler's wait on the job (named by the handoff), then attach
        run = f"s3://{bucket}/daily/{day}"
        handoff = json.loads(_object(s3, f"s3://{bucket}/daily/_schedule/{day}.json"))
        assert handoff["run"] == run and handoff["logical_date"].startswith(day)
        job = handoff["job_name"]
        assert job in {k.rsplit("/", 1)[-1].removesuffix(".json")
                       for k in s3_objects(s3, bucket, f"daily/{day}/training/")}  # fmt: skip
        model = sm.describe_training_job(TrainingJobName=job)["ModelArtifacts"]
        models[day] = model["S3ModelArtifacts"].removeprefix(f"s3://{bucket}/")
        s3.put_object(Bucket=bucket, Key=models[day], Body=day.encode())  # SageMaker's; not moto's
        assert main(["attach", job, "--run", run, "--config", str(job_yaml)]) == 0
        capsys.readouterr()
        return job

    follow("2026-12-01")
    step_for("2026-12-02", command="convert")  # day 2's first attempt: died after its commit
    step_for("2026-12-02")  # the retry: the run is kept, its job created
    again = step_for("2026-12-02")  # a retry after the job was created: found, not retrained
    assert "kept, not converted again" in again.err and "exists for this run" in again.out
    follow("2026-12-02")
    step_for("2026-12-03")
    newest = follow("2026-12-03")
    step_for("2026-11-28")  # a backfill
    runs = {d: json.loads(_object(s3, f"s3://{bucket}/daily/{d}/run.json"))
            for d in ["2026-11-28", "2026-12-01", "2026-12-02", "2026-12-03"]}  # fmt: skip
    assert len({r["run_id"] for r in runs.values()}) == 4  # one committed run per day
    made = jobs() - before
    assert len(made) == 4 and all(any(r["run_id"] in j for j in made) for r in runs.values())
    assert all(r["config"]["output"]["path"] == f"s3://{bucket}/daily/{d}"
               and r["config"]["output"]["logical_date"].startswith(d)
               for d, r in runs.items())  # fmt: skip
    follow("2026-11-28")

    latest = json.loads(_object(s3, f"s3://{bucket}/daily/latest.json"))
    assert latest["run"] == f"s3://{bucket}/daily/2026-12-03"  # the backfill did not move it
    assert latest["job_name"] == newest
    assert latest["model_artifact"] == f"s3://{bucket}/{models['2026-12-03']}"
    left = set(s3_objects(s3, bucket, "daily/"))
    # output.keep: 3 by logical date: the backfill is older than the 3 newest, so it goes
    # (with its model) once trained; every kept run and its model stays
    assert not [k for k in left if k.startswith("daily/2026-11-28/")]
    for d in ["2026-12-01", "2026-12-02", "2026-12-03"]:
        assert f"daily/{d}/run.json" in left and models[d] in left
    assert _object(s3, f"s3://{bucket}/daily/README.txt") == b"the team's notes"
    assert {f"daily/_schedule/{d}.json" for d in runs} <= left  # no run's: retention keeps them
