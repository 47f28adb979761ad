"""The CLI end to end, as a user runs it: sample → run (Spark + local trainer) → inspect."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import REPO


def jobs(*args, cwd=REPO):
    """The CLI as its own process: where the process is the point (its exit, its pipe)."""
    return subprocess.run(
        [sys.executable, "-m", "jobs", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def in_process(capsys, *args) -> subprocess.CompletedProcess:
    """The CLI through ``jobs.cli.main`` in this process (the shared Spark session, if any):
    what it prints and its exit code, for behaviour that is only a message and an exit code."""
    from jobs.cli import main

    capsys.readouterr()
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse: --help, a usage error
        code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    sample = jobs("sample", "--out", str(root / "digits"))
    assert sample.returncode == 0, sample.stderr
    assert "train 1257, validation 270, test 270" in sample.stdout
    out = root / "run"
    sets = [f"input.paths.{c}={root / 'digits' / c}" for c in ("train", "validation", "test")]
    sets.append(f"output.path={out}")
    args = ["run", "--config", "conf/local.yaml"]
    for s in sets:
        args += ["--set", s]
    result = jobs(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


@pytest.mark.spark
def test_run_prints_the_summary_and_the_classic_label_is_learned(digits_run):
    out, result = digits_run
    assert "Summary:" in result.stdout
    assert "read path" in result.stdout and "direct" in result.stdout
    assert "local stand-in" in result.stdout
    local = json.loads((out / "training" / "local" / "result.json").read_text())
    assert local["metrics"]["test:binary_classification_accuracy"] >= 0.97
    assert local["metrics"]["test:roc_auc_score"] > 0.97
    line = next(s for s in result.stdout.splitlines() if "test:binary_classification_accuracy" in s)
    assert float(line.split()[-1]) == pytest.approx(
        local["metrics"]["test:binary_classification_accuracy"], abs=1e-4
    )
    meta = json.loads((out / "run.json").read_text())
    assert {c: i["rows"] for c, i in meta["channels"].items()} == {
        "train": 1257,
        "validation": 270,
        "test": 270,
    }
    assert "epoch 15/15" in result.stdout


@pytest.mark.spark
def test_inspect_verifies_a_run_and_names_a_corrupt_shard(digits_run, tmp_path, capsys):
    out, _ = digits_run
    ok = in_process(capsys, "inspect", str(out), "--json")
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["records"] == 1797 and report["feature_dim"] == 64
    assert report["verified_against_metadata"] and not report["problems"]
    assert report["labels"] == {"0": 1619, "1": 178}

    shard = next((out / "data" / "test").iterdir())
    data = bytearray(shard.read_bytes())
    record = len(data) // 270
    data[record * 5 : record * 5 + 4] = b"\0\0\0\0"  # the sixth record's magic
    bad = tmp_path / "bad.recordio"
    bad.write_bytes(data)
    single = in_process(capsys, "inspect", str(bad))
    assert single.returncode == 3
    assert f"{bad}: corrupt RecordIO at byte offset {record * 5}" in single.stderr

    original = shard.read_bytes()
    shard.write_bytes(bytes(data))
    try:
        run = in_process(capsys, "inspect", str(out))
    finally:
        shard.write_bytes(original)
    assert run.returncode == 3
    assert str(shard) in run.stderr and "byte offset" in run.stderr
    assert "checksums    MISMATCH" in run.stdout


def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    bad = in_process(capsys, "convert", "--config", "conf/local.yaml", "--set", "output.mdoe=error")
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "error: unknown config key 'output.mdoe' (did you mean output.mode?); "
        "valid keys here: path, mode, encoding, max_shard_mb, checksum, sha256, shards, shuffle, "
        "seed, lease_timeout_s, take_over_lease, keep, series, logical_date"
    )
    missing = in_process(
        capsys, "train", "--config", "conf/local.yaml", "--run", str(tmp_path / "none")
    )
    assert missing.returncode == 2
    assert "holds no committed run" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.processes
def test_output_cut_short_by_a_pipe_is_not_an_error():
    """`python -m jobs iam-policy ... | head`: the reader closes the pipe before the output
    ends. A real pipe between two processes (the closed pipe is the point); `true` closes
    it at once, long before the interpreter has started, so the write always meets it."""
    cmd = f"{sys.executable} -m jobs iam-policy --config conf/emr.yaml | true"
    piped = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=REPO, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert piped.stderr == "" and piped.returncode == 141


def test_an_os_error_is_one_line_naming_the_path(tmp_path, capsys):
    """A path the OS refuses (here: a folder under a file) is the user's to fix: one line
    naming it, exit 2 — not "unexpected"."""
    from jobs.cli import main

    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "a-file" / "shards"
    assert main(["sample", "--out", str(out), "--synthetic", "--rows", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Not a directory: ") and str(tmp_path / "a-file") in err
    assert len(err.strip().splitlines()) == 1


def test_help_explains_each_command(capsys):
    out = in_process(capsys, "--help").stdout
    listed = dict(re.findall(r"^    (\S+)\s{2,}(\S.*)$", out, re.MULTILINE))
    assert set(listed) == {
        "sample",
        "convert",
        "train",
        "run",
        "inspect",
        "attach",
        "logs",
        "stop",
        "emr-step",
        "iam-policy",
        "schedule",
    }
    assert all(len(text) > 20 for text in listed.values())  # each with a sentence
    assert "--set KEY.PATH=VALUE" in in_process(capsys, "convert", "--help").stdout


def _sagemaker_job(capsys, command, tmp_path, bucket, moto_server, *settings):
    """``command`` in-process: sample data in, an S3 output, SageMaker training to us-east-1."""
    if not (tmp_path / "d").exists():
        data = in_process(capsys, "sample", "--out", str(tmp_path / "d"))
        assert data.returncode == 0, data.stderr
    sets = [
        f"input.paths.train={tmp_path / 'd' / 'train'}",
        f"output.path=s3://{bucket}/run",
        f"s3.endpoint_url={moto_server}",
        "training.backend=sagemaker",
        "training.sagemaker.region=us-east-1",
        "training.sagemaker.role_arn=arn:aws:iam::123456789012:role/SageMakerRole",
        *settings,
    ]
    conf = str(REPO / "conf" / "local.yaml")
    return in_process(capsys, command, "--config", conf, *[a for s in sets for a in ("--set", s)])


@pytest.mark.aws
@pytest.mark.parametrize(
    "setting, message",
    [
        (
            "training.hyperparameters={epochs: 3, margn: 1}",
            "error: unknown linear-learner hyperparameter 'margn'; did you mean 'margin'?",
        ),
        (
            "training.sagemaker.instance_type=ml.m5.xlarg",
            "error: training request: CreateTrainingJob.ResourceConfig.InstanceType = "
            "'ml.m5.xlarg' is not one the API accepts; did you mean 'ml.m5.xlarge'?",
        ),
        (
            "training.sagemaker.tags={'team#1': ml}",
            "error: training request: CreateTrainingJob.Tags[0].Key = 'team#1' does not match "
            "the API's pattern",
        ),
        (
            "training.sagemaker.tags={'aws:team': ml}",
            "error: training request: tag 'aws:team': the aws: prefix is reserved for AWS",
        ),
        (
            "training.sagemaker.max_retry_attempts=31",
            "error: training request: CreateTrainingJob.RetryStrategy.MaximumRetryAttempts = 31 "
            "is above the API's maximum 30",
        ),
        (
            "training.hyperparameters={loss: softmax_loss}",
            "error: hyperparameter loss = 'softmax_loss' does not fit a binary_classifier",
        ),
    ],
)
def test_run_checks_the_training_section_before_any_work(
    moto_server, s3, bucket, tmp_path, capsys, setting, message
):
    """A bad training section fails `run` (and `convert`, `emr-step`) in one line before any
    work: nothing under the output, no Spark job (in-process: no Spark session is started
    where none ran), no SageMaker call."""
    from jobs.session import active_session

    jobs_before = _spark_jobs()
    for command in ("run", "convert"):
        result = _sagemaker_job(capsys, command, tmp_path, bucket, moto_server, setting)
        assert result.returncode == 2, result.stderr[-2000:]
        assert result.stderr.strip().startswith(message), result.stderr
        assert "\n" not in result.stderr.strip()
        assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert _spark_jobs() == jobs_before
    if jobs_before is None:
        assert active_session() is None


def _spark_jobs():
    """The ids of every Spark job this process's session has run (None: no session)."""
    from jobs.session import active_session

    spark = active_session()
    return None if spark is None else sorted(spark.sparkContext.statusTracker().getJobIdsForGroup())


@pytest.mark.aws
def test_a_bucket_in_another_region_than_training_fails_before_any_work(
    moto_server, s3, tmp_path, capsys
):
    bucket = f"eu-{tmp_path.name[-8:].lower().replace('_', '-')}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    result = _sagemaker_job(capsys, "run", tmp_path, bucket, moto_server)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == (
        f"error: the output bucket {bucket} is in eu-west-1, but training would run in "
        "us-east-1: SageMaker reads training data only from its own region; set "
        f"training.sagemaker.region: eu-west-1 or write to a bucket in us-east-1"
    )
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


@pytest.mark.aws
@pytest.mark.processes
def test_attach_and_logs_follow_a_job_as_real_processes(moto_server, bucket, tmp_path):
    import boto3

    sm = boto3.client("sagemaker", region_name="us-east-1", endpoint_url=moto_server)
    sm.create_training_job(
        TrainingJobName="attach-me",
        RoleArn="arn:aws:iam::123456789012:role/SageMakerRole",
        AlgorithmSpecification={
            "TrainingImage": "382416733822.dkr.ecr.us-east-1.amazonaws.com/linear-learner:1",
            "TrainingInputMode": "File",
        },
        OutputDataConfig={"S3OutputPath": f"s3://{bucket}/out"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 60},
    )
    sets = [
        "--set", f"output.path=s3://{bucket}/none",
        "--set", f"s3.endpoint_url={moto_server}",
        "--set", "training.sagemaker.region=us-east-1",
        "--set", f"training.sagemaker.endpoint_url={moto_server}",
        "--set", "training.sagemaker.poll_seconds=0",
    ]  # fmt: skip
    attached = jobs("attach", "attach-me", "--config", "conf/local.yaml", *sets)
    assert attached.returncode == 0, attached.stderr[-2000:]
    assert re.search(r"training +sagemaker: Completed", attached.stdout), attached.stdout
    assert "no committed run at" in attached.stderr  # printed only, nothing written
    logs = jobs("logs", "attach-me", "--config", "conf/local.yaml", *sets)
    assert logs.returncode == 0, logs.stderr[-2000:]


def _brotli(tmp_path):
    """A Parquet file pyarrow writes and Spark's reader has no codec for."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "br").mkdir()
    table = pa.table({"a": [0.5, 1.5, 2.5], "target": [0, 1, 0]})
    pq.write_table(table, tmp_path / "br" / "part-0.parquet", compression="brotli")
    return tmp_path / "br"


def _config_file(tmp_path, text: str | bytes):
    path = tmp_path / "job.yaml"
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return str(path)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


# (id, argv from tmp_path and the moto URL, exit code, what the one line says): one per class of
# failure the CLI meets from YAML, the OS, botocore, pyarrow's files, Py4J and Spark's tasks.
FAILURES = [
    ("yaml-list", lambda t, m: ["convert", "--config", _config_file(t, "- a\n- b\n")], 2,
     "error: config: expected a mapping, got ['a', 'b']"),
    ("yaml-binary", lambda t, m: ["convert", "--config", _config_file(t, b"\x7fELF\x02\xd0\xff")],
     2, "is not a text (UTF-8) file"),
    ("setting-out-of-range", lambda t, m: ["convert", "--set", "read.batch_rows=0"], 2,
     "error: read.batch_rows must be at least 1 (rows per Arrow batch): got 0"),
    ("unset-variable", lambda t, m: ["convert", "--set", "output.path=$JOBS_NOT_SET/out"], 2,
     "error: output.path '$JOBS_NOT_SET/out': $JOBS_NOT_SET is not set in the environment"),
    ("endpoint-without-scheme",
     lambda t, m: ["inspect", "s3://b/x", "--set", "s3.endpoint_url=localhost:9000"], 2,
     "error: s3.endpoint_url 'localhost:9000' is not an http:// or https:// URL"),
    ("os-not-a-directory",
     lambda t, m: ["sample", "--out", str(_config_file(t, "x")) + "/d", "--synthetic"], 2,
     "error: Not a directory: "),
    ("aws-no-such-bucket",
     lambda t, m: ["inspect", "s3://no-such-bucket-here/x", "--set", f"s3.endpoint_url={m}"], 2,
     "error: AWS refused ListObjectsV2 (NoSuchBucket: The specified bucket does not exist: "
     "no-such-bucket-here)"),
    ("aws-invalid-bucket-name",
     lambda t, m: ["inspect", "s3://Bad_Bucket/x", "--set", f"s3.endpoint_url={m}"], 2,
     "Bad_Bucket); check the name: S3 bucket names are 3-63 lowercase letters"),
    ("arrow-not-recordio", lambda t, m: ["inspect", _config_file(t, "not shards\n")], 3,
     "corrupt RecordIO at byte offset 0"),
    ("spark-unreachable-master",
     lambda t, m: ["convert", "--set", f"spark.master=spark://127.0.0.1:{_closed_port()}"], 2,
     "no Spark master answers (127.0.0.1:"),
    ("py4j-root-cause",
     lambda t, m: ["convert", "--set", f"input.paths={{train: [{_brotli(t)}]}}", "--set",
                   "select.label=target", "--set", "read.path=spark", "--set",
                   f"output.path={t / 'out'}", "--set", "training.backend=none"], 2,
     "BrotliCodec was not found (reading file://"),
]  # fmt: skip


@pytest.mark.spark
@pytest.mark.aws
@pytest.mark.parametrize(
    "argv, code, line", [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES]
)
def test_every_class_of_failure_is_one_line_never_unexpected(
    spark, moto_server, tmp_path, capsys, monkeypatch, argv, code, line
):
    """In-process through ``jobs.cli.main``, as a user's command runs: the exit code and one
    line that says what to change; never "unexpected", never a traceback or a bare "Details:"."""
    from jobs.cli import main

    monkeypatch.chdir(REPO)
    monkeypatch.delenv("JOBS_NOT_SET", raising=False)
    assert main(argv(tmp_path, moto_server)) == code
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1]
    assert line in last, err[-2000:]
    assert "unexpected" not in err and "Traceback" not in err
    assert not last.endswith(("Details:", ":")), last


@pytest.mark.processes
def test_a_driver_out_of_heap_says_so_in_seconds(tmp_path):
    """A wide input (here 3,000 columns on the Spark path) in a heap too small for its plan:
    the JVM stops on its OutOfMemoryError and the CLI names it and the setting to raise,
    instead of a minute-long collection followed by "Connection refused". Its own process:
    the JVM's exit is the point. GC limits are tightened only so that it fails in seconds."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.session import JVM_OPTIONS

    (tmp_path / "wide").mkdir()
    x = np.random.default_rng(0).random((10, 3000), dtype=np.float32)
    columns = {f"c{i}": x[:, i] for i in range(3000)} | {"target": np.arange(10) % 2}
    pq.write_table(pa.table(columns), tmp_path / "wide" / "part-0.parquet")
    sets = {
        "input.paths": f"{{train: [{tmp_path / 'wide'}]}}",
        "select.label": "target",
        "read.path": "spark",
        "output.path": str(tmp_path / "out"),
        "training.backend": "none",
        "spark.conf": "{spark.driver.memory: 96m, spark.testing.memory: '1073741824', "
        f"spark.driver.extraJavaOptions: '{JVM_OPTIONS} -XX:GCTimeLimit=20 "
        "-XX:GCHeapFreeLimit=40'}",
    }
    done = jobs("convert", "--quiet", *[a for k, v in sets.items() for a in ("--set", f"{k}={v}")])
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "error: the conversion failed: Spark's driver JVM ran out of memory "
        "(java.lang.OutOfMemoryError with spark.driver.memory 96m) and exited: give it more, "
        "e.g. --set spark.conf.spark.driver.memory=4g"
    )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.recordio"))
    assert "could not remove" not in done.stderr  # the cleanup does not need the dead JVM


@pytest.mark.spark
def test_a_local_driver_jvm_runs_with_an_exit_on_out_of_memory(spark):
    """What the test above tightens, the JVM itself reports as running by default."""
    from jobs.session import JVM_OPTIONS

    bean = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    assert set(JVM_OPTIONS.split()) <= set(bean.getInputArguments())


def test_a_collector_chosen_in_the_environment_is_not_contradicted(monkeypatch):
    """A JVM given two collectors refuses to start: ours only where none is chosen."""
    from jobs.session import _jvm_options

    for name in ("SPARK_SUBMIT_OPTS", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS"):
        monkeypatch.delenv(name, raising=False)
    assert "-XX:+UseParallelGC" in _jvm_options().split()
    monkeypatch.setenv("JAVA_TOOL_OPTIONS", "-Xss4m -XX:+UseG1GC")
    assert _jvm_options().split() == ["-XX:+ExitOnOutOfMemoryError"]
