"""SageMaker training: the request against the moto server; what moto cannot produce
(InProgress, transitions, Failed, log pages) through botocore's Stubber; local checks call
nothing."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import boto3
import numpy as np
import pytest
from botocore.stub import ANY, Stubber
from helpers import config, write_columns

from jobs.errors import TrainingError
from jobs.runinfo import RunLayout, load_run
from jobs.spark_job import convert
from jobs.storage import Store
from jobs.training import hyperparameters as hpmod
from jobs.training.sagemaker import (
    attach,
    build_request,
    follow,
    image_uri,
    job_name,
    run_job,
    train_sagemaker,
)

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.fixture(scope="module")
def s3_run(spark, moto_server, tmp_path_factory):
    """A committed run on the moto S3: train (4 shards) and validation."""
    from jobs.storage import s3_client

    root = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    x = rng.random((400, 6), dtype=np.float32)
    y = rng.integers(0, 2, 400)
    src = write_columns(root / "in", x, y, files=4)
    bucket = "training-runs"
    s = config(**{"s3.endpoint_url": moto_server, "s3.region": "us-east-1"}).s3
    s3_client(s).create_bucket(Bucket=bucket)
    uri = f"s3://{bucket}/run"
    convert(
        config(
            **{
                "input.path": src,
                "input.split": "{train: 0.8, validation: 0.2}",
                "output.path": uri,
                "s3.endpoint_url": moto_server,
                "s3.region": "us-east-1",
            }
        ),
        spark,
    )
    _, meta = load_run(uri, Store(s), verify=True)
    return uri, meta


def _cfg(moto_server, uri, **extra):
    base = {
        "output.path": uri,
        "s3.endpoint_url": moto_server,
        "s3.region": "us-east-1",
        "training.backend": "sagemaker",
        "training.sagemaker.region": "us-east-1",
        "training.sagemaker.role_arn": ROLE,
        "training.sagemaker.endpoint_url": moto_server,
        "training.sagemaker.poll_seconds": 0,
        "training.hyperparameters": "{epochs: 3, mini_batch_size: 50, use_bias: true}",
    }
    return config(**(base | extra))


@pytest.mark.spark
@pytest.mark.aws
def test_request_is_accepted_and_carries_every_field(moto_server, s3_run):
    uri, meta = s3_run
    cfg = _cfg(
        moto_server,
        uri,
        **{
            "training.sagemaker.instance_count": 2,
            "training.sagemaker.shuffle_seed": 7,
            "training.sagemaker.channel_input_modes": "{validation: Pipe}",
            "training.sagemaker.tags": "{team: ml, run: digits}",
            "training.sagemaker.output_kms_key_id": "alias/out",
            "training.sagemaker.volume_kms_key_id": "alias/vol",
            "training.sagemaker.subnets": "[subnet-1]",
            "training.sagemaker.security_group_ids": "[sg-1]",
            "training.sagemaker.network_isolation": "true",
            "training.sagemaker.inter_container_encryption": "true",
            "training.sagemaker.spot": "true",
            "training.sagemaker.max_wait_seconds": 7200,
            "training.sagemaker.max_runtime_seconds": 3600,
            "training.sagemaker.checkpoint_s3_uri": "s3://training-runs/ckpt",
            "training.sagemaker.max_retry_attempts": 2,
        },
    )
    lines = []
    sm, logs = _stubbed(moto_server)
    sent = {}
    sm.meta.events.register(
        "before-parameter-build.sagemaker.CreateTrainingJob",
        lambda params, **kw: sent.update(params),
    )
    result = train_sagemaker(
        cfg, uri, Store(cfg.s3), meta, progress=lines.append, sm_client=sm, logs_client=logs
    )
    accepted = sm.describe_training_job(TrainingJobName=result["job_name"])
    assert accepted["TrainingJobArn"] == result["job_arn"]
    assert accepted["HyperParameters"] == sent["HyperParameters"]
    desc = sent  # what botocore validated and sent; moto echoes only part of it back
    assert desc["AlgorithmSpecification"]["TrainingImage"] == (
        "382416733822.dkr.ecr.us-east-1.amazonaws.com/linear-learner:1"
    )
    assert desc["HyperParameters"] == {
        "epochs": "3",
        "mini_batch_size": "50",
        "use_bias": "true",
        "predictor_type": "binary_classifier",
        "feature_dim": "6",
    }
    channels = {c["ChannelName"]: c for c in desc["InputDataConfig"]}
    train = channels["train"]["DataSource"]["S3DataSource"]
    assert train == {
        "S3DataType": "ManifestFile",
        "S3Uri": f"{uri}/manifests/train-{meta.run_id}.manifest",
        "S3DataDistributionType": "ShardedByS3Key",
    }
    assert channels["train"]["ShuffleConfig"] == {"Seed": 7}
    assert channels["validation"]["InputMode"] == "Pipe"
    assert channels["validation"]["DataSource"]["S3DataSource"]["S3DataDistributionType"] == (
        "FullyReplicated"
    )
    assert channels["train"]["ContentType"] == "application/x-recordio-protobuf"
    assert desc["ResourceConfig"]["InstanceCount"] == 2
    assert desc["Tags"] == [{"Key": "team", "Value": "ml"}, {"Key": "run", "Value": "digits"}]
    assert desc["ResourceConfig"]["VolumeKmsKeyId"] == "alias/vol"
    assert desc["OutputDataConfig"] == {
        "S3OutputPath": f"{uri}/training/sagemaker",
        "KmsKeyId": "alias/out",
    }
    assert desc["VpcConfig"] == {"Subnets": ["subnet-1"], "SecurityGroupIds": ["sg-1"]}
    assert desc["EnableNetworkIsolation"] and desc["EnableInterContainerTrafficEncryption"]
    assert desc["EnableManagedSpotTraining"]
    assert desc["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert desc["CheckpointConfig"]["S3Uri"] == "s3://training-runs/ckpt"
    assert desc["RetryStrategy"] == {"MaximumRetryAttempts": 2}
    assert result["status"] == "Completed"
    assert result["model_artifact"] == accepted["ModelArtifacts"]["S3ModelArtifacts"]
    saved = Store(cfg.s3).get_json(
        load_run(uri, Store(cfg.s3))[0].result(f"{result['job_name']}.json")
    )
    assert saved["job_arn"] == accepted["TrainingJobArn"] and saved["status"] == "Completed"
    assert any("Completed" in line for line in lines)


def _stubbed(moto_server):
    sm = boto3.client("sagemaker", region_name="us-east-1", endpoint_url=moto_server)
    logs = boto3.client("logs", region_name="us-east-1", endpoint_url=moto_server)
    return sm, logs


def _no_job_yet(stub):
    """SageMaker's answer to the lookup of a job that does not exist."""
    stub.add_client_error(
        "describe_training_job", "ValidationException", "Requested resource not found."
    )


def _describe(status, secondary, transitions=(), **extra):
    return {
        "TrainingJobName": "job-1",
        "TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/job-1",
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "SecondaryStatusTransitions": [
            {
                "Status": s,
                "StartTime": datetime(2026, 1, 1, tzinfo=timezone.utc),
                "StatusMessage": m,
            }
            for s, m in transitions
        ],
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ModelArtifacts": {"S3ModelArtifacts": "s3://b/model.tar.gz"},
        "ResourceConfig": {"InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {},
        "CreationTime": datetime(2026, 1, 1, tzinfo=timezone.utc),
        **extra,
    }


@pytest.mark.aws
def test_follow_reports_transitions_log_pages_and_a_failure(moto_server):
    sm, logs = _stubbed(moto_server)
    stream = "job-1/algo-1-1700000000"
    with Stubber(sm) as s_sm, Stubber(logs) as s_logs:
        s_sm.add_response(
            "describe_training_job",
            _describe("InProgress", "Starting", [("Starting", "Launching")]),
        )
        s_logs.add_client_error("describe_log_streams", "ResourceNotFoundException")
        s_sm.add_response(
            "describe_training_job",
            _describe(
                "InProgress",
                "Training",
                [("Starting", "Launching"), ("Training", "Training in progress")],
            ),
        )
        s_logs.add_response("describe_log_streams", {"logStreams": [{"logStreamName": stream}]})
        s_logs.add_response(
            "get_log_events",
            {"events": [{"timestamp": 1, "message": "epoch 1"}], "nextForwardToken": "f/1"},
            {"logGroupName": ANY, "logStreamName": stream, "startFromHead": True},
        )
        s_logs.add_response(
            "get_log_events",
            {"events": [{"timestamp": 2, "message": "epoch 2"}], "nextForwardToken": "f/2"},
            {
                "logGroupName": ANY,
                "logStreamName": stream,
                "startFromHead": True,
                "nextToken": "f/1",
            },
        )
        s_logs.add_response(
            "get_log_events",
            {"events": [], "nextForwardToken": "f/2"},
            {
                "logGroupName": ANY,
                "logStreamName": stream,
                "startFromHead": True,
                "nextToken": "f/2",
            },
        )
        s_sm.add_response(
            "describe_training_job",
            _describe("Failed", "Failed", [("Starting", ""), ("Training", ""), ("Failed", "")],
                      FailureReason="ClientError: No S3 objects found under S3 URL"),
        )  # fmt: skip
        s_logs.add_response("describe_log_streams", {"logStreams": [{"logStreamName": stream}]})
        s_logs.add_response(
            "get_log_events",
            {"events": [], "nextForwardToken": "f/2"},
            {
                "logGroupName": ANY,
                "logStreamName": stream,
                "startFromHead": True,
                "nextToken": "f/2",
            },
        )
        # after the end, the logs once more: a line logged as the job failed
        s_logs.add_response("describe_log_streams", {"logStreams": [{"logStreamName": stream}]})
        s_logs.add_response(
            "get_log_events",
            {"events": [{"timestamp": 3, "message": "bye"}], "nextForwardToken": "f/3"},
            {
                "logGroupName": ANY,
                "logStreamName": stream,
                "startFromHead": True,
                "nextToken": "f/2",
            },
        )
        s_logs.add_response(
            "get_log_events",
            {"events": [], "nextForwardToken": "f/3"},
            {
                "logGroupName": ANY,
                "logStreamName": stream,
                "startFromHead": True,
                "nextToken": "f/3",
            },
        )
        lines = []
        desc = follow(sm, logs, "job-1", 0, lines.append, sleep=lambda s: None)
        s_sm.assert_no_pending_responses()
        s_logs.assert_no_pending_responses()
    assert desc["FailureReason"].startswith("ClientError")
    text = "\n".join(lines)
    assert "InProgress / Starting" in text and "InProgress / Training" in text
    assert "Training: Training in progress" in text
    assert "[algo-1-1700000000] epoch 1" in text and "[algo-1-1700000000] epoch 2" in text
    assert text.index("epoch 1") < text.index("epoch 2") < text.index("Failed / Failed")
    assert text.index("Failed / Failed") < text.index("] bye")


@pytest.mark.aws
@pytest.mark.parametrize("code", ["AccessDeniedException", "ThrottlingException"])
def test_log_errors_degrade_to_status_only_with_one_warning(moto_server, code):
    sm, logs = _stubbed(moto_server)
    warnings, lines = [], []
    with Stubber(sm) as s_sm, Stubber(logs) as s_logs:
        s_sm.add_client_error("describe_training_job", "AccessDeniedException")  # a new role
        s_sm.add_response("describe_training_job", _describe("InProgress", "Training", []))
        s_logs.add_client_error("describe_log_streams", code)
        s_sm.add_response("describe_training_job", _describe("InProgress", "Training", []))
        s_sm.add_response("describe_training_job", _describe("Completed", "Completed", []))
        desc = follow(
            sm, logs, "job-1", 0, lines.append, sleep=lambda s: None, warn=warnings.append
        )
        s_sm.assert_no_pending_responses()
        s_logs.assert_no_pending_responses()  # no log call after the first failure
    assert desc["TrainingJobStatus"] == "Completed"
    assert warnings == [
        f"CloudWatch Logs unavailable ({code}): following job-1 by its status only; its logs "
        "are in /aws/sagemaker/TrainingJobs"
    ]
    assert "access denied, retrying (role propagation)" in lines[0]


@pytest.mark.aws
def test_access_denied_that_lasts_is_raised(moto_server):
    sm, logs = _stubbed(moto_server)
    with Stubber(sm) as s_sm, Stubber(logs):
        s_sm.add_client_error("describe_training_job", "AccessDeniedException")
        with pytest.raises(Exception, match="AccessDenied"):
            follow(sm, logs, "job-1", 0, print, sleep=lambda s: None, access_wait_s=0.0)


@pytest.mark.spark
@pytest.mark.aws
def test_a_failed_job_raises_with_its_reason_and_ctrl_c_stops_it(moto_server, s3_run):
    uri, meta = s3_run
    cfg = _cfg(moto_server, uri)
    sm, logs = _stubbed(moto_server)
    with Stubber(sm) as s_sm, Stubber(logs) as s_logs:
        _no_job_yet(s_sm)
        s_sm.add_response("create_training_job", {"TrainingJobArn": "arn:x"})
        s_sm.add_response(
            "describe_training_job",
            _describe("Failed", "Failed", FailureReason="AlgorithmError: bad"),
        )
        s_logs.add_response("describe_log_streams", {"logStreams": []})
        with pytest.raises(TrainingError, match="Failed: AlgorithmError: bad"):
            train_sagemaker(
                cfg,
                uri,
                Store(cfg.s3),
                meta,
                progress=lambda s: None,
                sm_client=sm,
                logs_client=logs,
            )
        s_sm.assert_no_pending_responses()

        def interrupt(_):
            raise KeyboardInterrupt

        _no_job_yet(s_sm)
        s_sm.add_response("create_training_job", {"TrainingJobArn": "arn:x"})
        s_sm.add_response("describe_training_job", _describe("InProgress", "Training"))
        s_logs.add_response("describe_log_streams", {"logStreams": []})
        s_sm.add_response("stop_training_job", {}, {"TrainingJobName": ANY})
        with pytest.raises(KeyboardInterrupt):
            train_sagemaker(
                cfg,
                uri,
                Store(cfg.s3),
                meta,
                progress=lambda s: None,
                sm_client=sm,
                logs_client=logs,
                sleep=interrupt,
            )
        s_sm.assert_no_pending_responses()


@pytest.mark.spark
@pytest.mark.aws
@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"training.hyperparameters": "{epoch: 3}"},
            "unknown linear-learner hyperparameter 'epoch'; did you mean 'epochs'?",
        ),
        (
            {"training.hyperparameters": "{feature_dim: 7}"},
            "feature_dim = 7, but the run's shards hold 6",
        ),
        (
            {"training.hyperparameters": "{mini_batch_size: 0}"},
            "mini_batch_size = 0: expected an integer > 0",
        ),
        (
            {"training.sagemaker.role_arn": "SageMakerRole"},
            "'SageMakerRole' is not an IAM role ARN",
        ),
        (
            {"training.sagemaker.region": "mars-north-1"},
            "no linear-learner image known for region 'mars-north-1'; "
            "pass it explicitly with --set training.sagemaker.image_uri=",
        ),
        (
            {"training.sagemaker.input_mode": "FastFile"},
            "FastFile input mode does not read a ManifestFile",
        ),
        (
            {"training.sagemaker.instance_count": 9, "training.hyperparameters.mini_batch_size": 8},
            "channel train has 2 shards for 9 instances",
        ),
        (
            {"training.sagemaker.instance_count": 9},
            "mini_batch_size = 50 is more than the 35 train rows per instance (319 rows, 9 ",
        ),
        ({"training.hyperparameters.loss": "softmax_loss"}, "loss = 'softmax_loss' does not fit"),
        ({"training.sagemaker.job_name_prefix": "bad_name"}, "breaks the API's rule"),
        (
            {
                "training.predictor_type": "regressor",
                "training.hyperparameters": "{predictor_type: binary_classifier}",
            },
            "disagrees with training.predictor_type",
        ),
        ({"training.sagemaker.subnets": "[subnet-1]"}, "needs both subnets and security_group_ids"),
    ],
)
def test_local_checks_fail_before_any_call(moto_server, s3_run, settings, message):
    uri, meta = s3_run
    cfg = _cfg(moto_server, uri, **settings)
    sm, logs = _stubbed(moto_server)
    with Stubber(sm), Stubber(logs):  # nothing queued: any call would raise a stub error
        with pytest.raises(TrainingError) as info:
            train_sagemaker(cfg, uri, Store(cfg.s3), meta, sm_client=sm, logs_client=logs)
    assert message in str(info.value)


@pytest.mark.spark
@pytest.mark.aws
def test_a_local_run_cannot_train_on_sagemaker(moto_server, s3_run):
    _, meta = s3_run
    local = dataclasses.replace(
        meta,
        channels={
            name: dataclasses.replace(info, data_prefix=f"/tmp/run/data/{name}/")
            for name, info in meta.channels.items()
        },
    )
    cfg = _cfg(moto_server, "s3://training-runs/run")
    with pytest.raises(TrainingError, match="SageMaker reads S3 only"):
        build_request(cfg, "s3://training-runs/run", local, "job")


@pytest.mark.spark
@pytest.mark.aws
def test_missing_credentials_fail_before_any_call(
    moto_server, s3_run, monkeypatch, tmp_path, capsys
):
    uri, meta = s3_run
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    cfg = _cfg(moto_server, uri)
    with pytest.raises(TrainingError, match="no AWS credentials found"):
        train_sagemaker(cfg, uri, Store(cfg.s3), meta)
    # the local trainer on an S3 run: the CLI says so before reading anything
    from jobs.cli import main

    monkeypatch.chdir(tmp_path)
    sets = ["--set", f"s3.endpoint_url={moto_server}", "--set", "training.backend=local"]
    assert main(["train", "--run", uri, *sets]) == 2
    assert capsys.readouterr().err == (
        f"error: no AWS credentials found for {uri} (training reads the run there): set "
        "AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with an instance or "
        "task role\n"
    )


def test_names_images_and_hyperparameter_wire_format():
    assert job_name("ll", datetime(2026, 11, 24, 1, 2, 3, 456000, tzinfo=timezone.utc)) == (
        "ll-20261124-010203-456"
    )
    with pytest.raises(TrainingError):
        job_name("x" * 60)
    assert image_uri("eu-west-1") == "438346466558.dkr.ecr.eu-west-1.amazonaws.com/linear-learner:1"
    assert image_uri("xx-1", "my/image:1") == "my/image:1"
    assert hpmod.to_wire({"use_bias": True, "wd": 0.5, "epochs": 3}) == {
        "use_bias": "true",
        "wd": "0.5",
        "epochs": "3",
    }
    assert hpmod.validate(
        {"learning_rate": "AUTO", "positive_example_weight_mult": "Balanced", "epochs": "3"}
    ) == {"learning_rate": "auto", "positive_example_weight_mult": "balanced", "epochs": 3}


@pytest.mark.spark
@pytest.mark.aws
def test_no_wait_starts_the_job_and_returns(moto_server, s3_run):
    uri, meta = s3_run
    cfg = _cfg(moto_server, uri)
    sm, logs = _stubbed(moto_server)
    with Stubber(sm) as stub:  # the lookup of the run's job, CreateTrainingJob, and no follow
        _no_job_yet(stub)
        stub.add_response("create_training_job", {"TrainingJobArn": "arn:aws:sagemaker:x:job/j"})
        result = train_sagemaker(
            cfg, uri, Store(cfg.s3), meta, wait=False, progress=lambda s: None,
            sm_client=sm, logs_client=logs,
        )  # fmt: skip
        stub.assert_no_pending_responses()
    assert result["status"] == "InProgress" and result["job_arn"] == "arn:aws:sagemaker:x:job/j"


@pytest.mark.spark
@pytest.mark.aws
def test_shards_that_do_not_match_the_run_are_refused(moto_server, s3_run):
    from jobs.errors import StorageError

    uri, meta = s3_run
    cfg = _cfg(moto_server, uri)
    store = Store(cfg.s3)
    layout, _ = load_run(uri, store)
    shard = layout.shard("train", meta.channels["train"].shards[0].key)
    original = store.get(shard)
    store.put(shard, original[:-8])  # one record short
    try:
        with pytest.raises(StorageError, match="has .* bytes, the run metadata says"):
            load_run(uri, store, verify=True)
    finally:
        store.put(shard, original)
    load_run(uri, store, verify=True)


def test_the_image_table_is_the_sdks():
    """All of linear-learner's regions, each image URI as the SDK itself builds it."""
    import importlib.resources
    import json

    from sagemaker import image_uris

    from jobs.training.sagemaker import IMAGE_ACCOUNTS

    spec = importlib.resources.files("sagemaker") / "image_uri_config" / "linear-learner.json"
    registries = json.loads(spec.read_text())["versions"]["1"]["registries"]
    assert IMAGE_ACCOUNTS == registries
    for region in registries:
        assert image_uri(region) == image_uris.retrieve("linear-learner", region), region


def test_the_hyperparameter_table_is_at_least_as_strict_as_the_sdk():
    """Every hyperparameter the SDK's LinearLearner knows, with its choices; a value just past
    any of its bounds is refused here too. Where the documentation is stricter (num_classes
    from 3, margin and huber_delta above 0), ours follows the documentation."""
    from sagemaker.amazon.hyperparameter import Hyperparameter
    from sagemaker.amazon.linear_learner import LinearLearner

    sdk = {h.name: h for h in vars(LinearLearner).values() if isinstance(h, Hyperparameter)}
    assert set(sdk) <= set(hpmod.LINEAR_LEARNER)
    # the run sets feature_dim; the SDK passes mini_batch_size to fit(), not as a descriptor
    assert set(hpmod.LINEAR_LEARNER) - set(sdk) == {"feature_dim", "mini_batch_size"}
    probes = {
        "gt": lambda b: b,
        "ge": lambda b: b - 1e-9,
        "lt": lambda b: b,
        "le": lambda b: b + 1e-9,
    }
    checked = 0
    for name, h in sdk.items():
        validators = h.validation if isinstance(h.validation, (list, tuple)) else [h.validation]
        for v in validators:
            kind = v.__qualname__.split(".")[0]
            (arg,) = [c.cell_contents for c in v.__closure__]
            if kind == "isin":
                assert set(hpmod.LINEAR_LEARNER[name].choices) == set(arg), name
            else:
                with pytest.raises(TrainingError):
                    hpmod.validate({name: probes[kind](arg)})
            checked += 1
    assert checked == 42  # every validator the SDK has (isin, gt, ge, lt, le)
    for bad in ({"margin": 0}, {"huber_delta": 0}, {"num_classes": 2}):
        with pytest.raises(TrainingError):
            hpmod.validate(bad)
    assert hpmod.validate({"normalize_data": "auto"}) == {"normalize_data": "auto"}


@pytest.mark.spark
@pytest.mark.aws
@pytest.mark.parametrize("status", ["Completed", "Failed"])
def test_attach_records_the_same_result_as_train(moto_server, s3_run, status):
    """`attach` on a job gives the result JSON and the outcome `train` gives for it."""
    uri, meta = s3_run
    cfg = _cfg(moto_server, uri)
    store = Store(cfg.s3)
    layout = RunLayout.at(uri)
    extra = {"FailureReason": "AlgorithmError: bad"} if status == "Failed" else {}
    sm, logs = _stubbed(moto_server)
    outcomes, said = {}, []
    with Stubber(sm) as s_sm, Stubber(logs) as s_logs:
        _no_job_yet(s_sm)
        s_sm.add_response("create_training_job", {"TrainingJobArn": "arn:x"})
        for command in ("train", "attach"):
            s_sm.add_response("describe_training_job", _describe(status, status, **extra))
            for _ in range(2):  # while following, and once more after the end
                s_logs.add_response("describe_log_streams", {"logStreams": []})
            try:
                if command == "train":
                    got = train_sagemaker(
                        cfg, uri, store, meta, progress=said.append, sm_client=sm,
                        logs_client=logs, sleep=lambda s: None,
                    )  # fmt: skip
                else:
                    got = attach(
                        cfg, "job-1", uri, store, progress=lambda s: None, sm_client=sm,
                        logs_client=logs, sleep=lambda s: None,
                    )  # fmt: skip
                outcomes[command] = ("ok", got)
            except TrainingError as exc:
                outcomes[command] = ("error", str(exc).replace("job-1", "<job>"))
        s_sm.assert_no_pending_responses()
        s_logs.assert_no_pending_responses()
    (started,) = [line for line in said if line.startswith("started training job ")]
    trained = store.get_json(layout.result(started.split()[3] + ".json"))
    attached = store.get_json(layout.result("job-1.json"))
    assert attached == trained == result_of_describe(status, extra)
    if status == "Completed":
        assert outcomes["train"] == outcomes["attach"] == ("ok", attached)
    else:
        assert outcomes["attach"][0] == "error" and outcomes["train"][0] == "error"
        assert outcomes["attach"][1].endswith("Failed: AlgorithmError: bad")
        assert outcomes["train"][1].endswith("Failed: AlgorithmError: bad")


def result_of_describe(status, extra):
    from jobs.training.sagemaker import result_of

    return result_of(_describe(status, status, **extra))


@pytest.mark.spark
@pytest.mark.aws
@pytest.mark.parametrize("code", ["AccessDeniedException", "ThrottlingException"])
def test_train_completes_with_one_warning_when_logs_fail(moto_server, s3_run, code, caplog):
    """CloudWatch Logs refusing us mid-run costs the log lines, never the result."""
    uri, meta = s3_run
    cfg = _cfg(moto_server, uri)
    sm, logs = _stubbed(moto_server)
    with Stubber(sm) as s_sm, Stubber(logs) as s_logs:
        _no_job_yet(s_sm)
        s_sm.add_response("create_training_job", {"TrainingJobArn": "arn:x"})
        s_sm.add_response("describe_training_job", _describe("InProgress", "Training"))
        s_logs.add_client_error("describe_log_streams", code)
        s_sm.add_response("describe_training_job", _describe("InProgress", "Training"))
        s_sm.add_response("describe_training_job", _describe("Completed", "Completed"))
        with caplog.at_level("WARNING", logger="jobs.training.sagemaker"):
            result = train_sagemaker(
                cfg, uri, Store(cfg.s3), meta, progress=lambda s: None, sm_client=sm,
                logs_client=logs, sleep=lambda s: None,
            )  # fmt: skip
        s_sm.assert_no_pending_responses()
        s_logs.assert_no_pending_responses()
    assert result["status"] == "Completed" and result["model_artifact"] == "s3://b/model.tar.gz"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"CloudWatch Logs unavailable ({code})" in warnings[0]


@pytest.mark.spark
@pytest.mark.aws
def test_a_run_trained_again_finds_its_job_instead_of_starting_another(moto_server, s3_run):
    """A retried step, a node lost after the job was created, a second `train`: the run's job
    for the same request has one name, so it is found and followed. A changed request is a new
    job; --retrain asks for one."""
    uri, meta = s3_run
    cfg = _cfg(moto_server, uri, **{"training.sagemaker.job_name_prefix": "again"})
    sm, logs = _stubbed(moto_server)
    created = []
    sm.meta.events.register(
        "before-parameter-build.sagemaker.CreateTrainingJob",
        lambda params, **kw: created.append(params["TrainingJobName"]),
    )

    def train(config=cfg, **kw):
        lines = []
        result = train_sagemaker(config, uri, Store(config.s3), meta, progress=lines.append,
                                 sm_client=sm, logs_client=logs, **kw)  # fmt: skip
        return result, lines

    first, _ = train()
    assert first["job_name"].startswith(f"again-{meta.run_id}-") and first["status"] == "Completed"
    again, lines = train()
    assert created == [first["job_name"]] and again["job_name"] == first["job_name"]
    assert (
        f"training job {first['job_name']} exists for this run and request (Completed)"
        in (lines[0])
    )
    assert run_job(cfg, Store(cfg.s3), uri) == first["job_name"]  # what emr-step --wait follows
    other = _cfg(moto_server, uri, **{"training.sagemaker.job_name_prefix": "again",
                                      "training.hyperparameters": "{epochs: 4}"})  # fmt: skip
    changed, _ = train(other)
    retrained, _ = train(retrain=True)
    assert created == [first["job_name"], changed["job_name"], retrained["job_name"]]
    assert len(set(created)) == 3 and changed["job_name"].startswith(f"again-{meta.run_id}-")


@pytest.mark.spark
@pytest.mark.aws
def test_a_moved_run_trains_and_inspects_where_it_is_now(moto_server, s3_run, tmp_path, capsys):
    """`aws s3 mv` of a committed run: run.json and the manifests name the old prefix, but
    `train --run NEW` must read NEW (a job reading the old prefix bills for the wrong data or
    fails inside SageMaker), and `inspect` on the moved manifest reads the moved shards."""
    import json

    from jobs.cli import main
    from jobs.storage import s3_client

    uri, meta = s3_run
    cfg = _cfg(moto_server, uri)
    s3 = s3_client(cfg.s3)
    new = "s3://training-runs/moved/here"
    for obj in s3.list_objects_v2(Bucket="training-runs", Prefix="run/")["Contents"]:
        key = "moved/here/" + obj["Key"][len("run/") :]
        s3.copy_object(Bucket="training-runs", Key=key,
                       CopySource={"Bucket": "training-runs", "Key": obj["Key"]})  # fmt: skip
    manifest = f"moved/here/manifests/train-{meta.run_id}.manifest"
    old_body = json.loads(s3.get_object(Bucket="training-runs", Key=manifest)["Body"].read())
    assert old_body[0]["prefix"] == f"{uri}/data/train/"  # as written, before the move
    where = ["--set", f"s3.endpoint_url={moto_server}", "--set", "s3.region=us-east-1"]
    assert main(["inspect", f"s3://training-runs/{manifest}", "--json", *where]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["shards"] == len(meta.channels["train"].shards)
    assert all("/moved/here/data/train/" in s["uri"] for s in shown["per_shard"]), shown
    assert not shown["problems"]
    sets = [
        f"{k}={v}"
        for k, v in {
            "s3.endpoint_url": moto_server, "s3.region": "us-east-1",
            "training.backend": "sagemaker", "training.sagemaker.region": "us-east-1",
            "training.sagemaker.role_arn": ROLE, "training.sagemaker.endpoint_url": moto_server,
            "training.sagemaker.job_name_prefix": "moved",
            "training.sagemaker.data_type": "ManifestFile",
        }.items()
    ]  # fmt: skip
    argv = ["train", "--run", new, "--no-wait"]
    assert main([*argv, *(x for s in sets for x in ("--set", s))]) == 0, capsys.readouterr().err
    sm = boto3.client("sagemaker", region_name="us-east-1", endpoint_url=moto_server)
    name = next(
        j["TrainingJobName"]
        for j in sm.list_training_jobs()["TrainingJobSummaries"]
        if j["TrainingJobName"].startswith(f"moved-{meta.run_id}")
    )
    channels = sm.describe_training_job(TrainingJobName=name)["InputDataConfig"]
    uris = {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in channels}
    assert uris["train"] == f"{new}/manifests/train-{meta.run_id}.manifest", uris
    body = json.loads(s3.get_object(Bucket="training-runs", Key=manifest)["Body"].read())
    assert body == [{"prefix": f"{new}/data/train/"}, *old_body[1:]]  # what SageMaker reads
