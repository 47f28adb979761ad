"""`schedule`: the printed state machine and schedule, judged by parts we did not write.

The Amazon States Language engine that moto carries (LocalStack's: its ANTLR grammar parses the
definition, its interpreter evaluates paths, intrinsic functions and Choice rules) accepts the
state machine and evaluates each task's parameters, which botocore's service model then judges
as the request each task sends; the cluster steps' arguments parse with our CLI as the commands
they must be, and the conversion step writes its handoff where the next state reads it. (That
`run --handoff` writes it and `attach` records the job it names runs in test_emr's schedule.)
"""

from __future__ import annotations

import copy
import fnmatch
import json
import time

import boto3
import botocore.session
import pytest
from botocore.exceptions import ClientError
from botocore.validate import ParamValidator
from conftest import REPO
from moto import mock_aws

from jobs import aws
from jobs.cli import build_parser, main
from jobs.config import load_config, logical_date
from jobs.iam import policies

CONF = str(REPO / "conf" / "emr.yaml")
CLUSTER = "j-2AXXXXXXGAPLF"
ROLE = "arn:aws:iam::123456789012:role/StatesRole"
SETS = [
    "emr.artifacts_uri=s3://sched-bucket/artifacts", "emr.region=us-east-1",
    "output.path=s3://sched-bucket/daily/{date}", "output.mode=resume", "output.keep=7",
    "s3.sse=AES256", "s3.expected_bucket_owner=123456789012",
    f"schedule.role_arn={ROLE}",
    "schedule.scheduler_role_arn=arn:aws:iam::123456789012:role/SchedulerRole",
]  # fmt: skip


@pytest.fixture
def sfn(tmp_path):
    """An in-process moto whose Step Functions runs the real ASL engine."""
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="sched-bucket")
        yield boto3.client("stepfunctions", region_name="us-east-1")


def _schedule(tmp_path, capsys, *more) -> dict:
    dist = tmp_path / "dist"
    dist.mkdir(exist_ok=True)
    (dist / "jobs.pex").write_bytes(b"pex")
    (dist / "main.py").write_text("print('entry')\n")
    argv = ["schedule", "--cluster-id", CLUSTER, "--config", CONF, "--dist", str(dist), *more]
    assert main(argv + [a for s in SETS for a in ("--set", s)]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _execute(sfn, definition: dict, data: dict, name: str = "daily-2026-12-01") -> dict:
    """Run ``definition`` on the ASL engine; its description when it has ended."""
    arn = sfn.create_state_machine(
        name=f"m{time.monotonic_ns()}", definition=json.dumps(definition), roleArn=ROLE
    )["stateMachineArn"]
    run = sfn.start_execution(stateMachineArn=arn, name=name, input=json.dumps(data))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        desc = sfn.describe_execution(executionArn=run["executionArn"])
        if desc["status"] != "RUNNING":
            return desc
        time.sleep(0.02)
    raise AssertionError(f"{name} did not end")


def _evaluated(sfn, state: dict, data: dict) -> dict:
    """A task's parameters as the engine evaluates them: the same Parameters in a Pass state."""
    one = {"StartAt": "P", "States": {"P": {"Type": "Pass", "Parameters": state["Parameters"],
                                            "End": True}}}  # fmt: skip
    desc = _execute(sfn, one, data)
    assert desc["status"] == "SUCCEEDED", desc
    return json.loads(desc["output"])


def _service_problems(service: str, operation: str, params: dict) -> list[str]:
    """botocore's own judgement of a request: unknown, missing and mistyped fields, then the
    constraints it carries but checks only server-side (aws.check_request)."""
    model = botocore.session.get_session().get_service_model(service)
    shape = model.operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    return ([report.generate_report()] if report.has_errors() else []) + aws.check_request(
        service, operation, params
    )


def _allows(doc: dict, action: str, resource: str) -> bool:
    return any(
        st["Effect"] == "Allow"
        and any(fnmatch.fnmatchcase(action, a) for a in _listed(st["Action"]))
        and any(fnmatch.fnmatchcase(resource, r) for r in _listed(st["Resource"]))
        for st in doc["Statement"]
    )


def _listed(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _targets(state: dict) -> list[str]:
    out = [state.get("Next"), state.get("Default")]
    out += [c.get("Next") for c in state.get("Choices", [])]
    out += [c.get("Next") for c in state.get("Catch", [])]
    return [t for t in out if t]


@pytest.mark.aws
def test_the_state_machine_runs_on_the_asl_engine_and_sends_what_each_service_accepts(
    sfn, tmp_path, capsys
):
    asl = _schedule(tmp_path, capsys)
    states = asl["States"]
    # the engine's grammar accepts it, and refuses it with one intrinsic misspelt (it can fail)
    sfn.create_state_machine(name="daily", definition=json.dumps(asl), roleArn=ROLE)
    broken = copy.deepcopy(asl)
    broken["States"]["Job"]["Parameters"]["Key.$"] = "States.Formatt('x{}', $$.Execution.Name)"
    with pytest.raises(ClientError, match="StatesFunctionNameType"):
        sfn.create_state_machine(name="broken", definition=json.dumps(broken), roleArn=ROLE)
    # every transition names a state, every state is reached, and it ends
    seen, todo = set(), [asl["StartAt"]]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            assert name in states, name
            todo += _targets(states[name])
    assert seen == set(states)
    assert any(s.get("End") or s["Type"] in ("Succeed", "Fail") for s in states.values())

    # what each task sends, as the engine evaluates it for a scheduled day
    config = load_config(CONF, SETS)
    name = f"{config.training.sagemaker.job_name_prefix}-20261201-030012-5844d5-abc123"
    day = {
        "logical_date": "2026-12-01T03:00:00Z",
        "job": {"handoff": {"job_name": name, "run": "s3://sched-bucket/daily/2026-12-01"}},
    }
    convert = _evaluated(sfn, states["Convert"], day)
    record = _evaluated(sfn, states["Record"], day)
    job = _evaluated(sfn, states["Job"], day)
    poll = _evaluated(sfn, states["Poll"], day)
    for step in (convert, record):  # the addStep integration's fields are AddJobFlowSteps'
        request = {"JobFlowId": step["ClusterId"], "Steps": [step["Step"]]}
        assert not _service_problems("emr", "AddJobFlowSteps", request)
        assert step["ClusterId"] == CLUSTER
    assert not _service_problems("s3", "GetObject", job)
    assert not _service_problems("sagemaker", "DescribeTrainingJob", poll)

    # the steps are the commands they must be; the conversion writes where Job reads
    def command(step):
        args = step["Step"]["HadoopJarStep"]["Args"]
        assert args[:3] == ["spark-submit", "--deploy-mode", "cluster"]
        entry = next(i for i, a in enumerate(args) if a.endswith("/main.py"))
        return build_parser().parse_args(args[entry + 1 :])

    run, attach = command(convert), command(record)
    assert run.command == "run" and run.no_wait and run.config == "job.yaml"
    assert logical_date(run.logical_date).date().isoformat() == "2026-12-01"
    assert run.handoff == f"s3://{job['Bucket']}/{job['Key']}"
    assert job["Key"] == "daily/_schedule/daily-2026-12-01.json"  # one per execution
    assert job["ExpectedBucketOwner"] == "123456789012"
    assert attach.command == "attach" and attach.job == day["job"]["handoff"]["job_name"]
    assert attach.run == day["job"]["handoff"]["run"] and poll["TrainingJobName"] == attach.job
    # the roles `iam-policy` prints grant what each task does, on what it does it to (the
    # EMR integration's actions as Step Functions documents them)
    docs = policies(config)
    cluster = f"arn:aws:elasticmapreduce:us-east-1:123456789012:cluster/{CLUSTER}"
    needs = [("state_machine", f"elasticmapreduce:{a}", cluster)
             for a in ("AddJobFlowSteps", "DescribeStep", "CancelSteps")] + [
        ("state_machine", "s3:GetObject", f"arn:aws:s3:::{job['Bucket']}/{job['Key']}"),
        ("state_machine", "sagemaker:DescribeTrainingJob",
         f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{attach.job.lower()}"),
    ]  # fmt: skip
    handoff_arn = f"arn:aws:s3:::{job['Bucket']}/{job['Key']}"
    needs += [  # the cluster's side: the conversion step writes the handoff, Record follows
        ("emr_instance_profile", "s3:PutObject", handoff_arn),
        ("emr_instance_profile", "sagemaker:DescribeTrainingJob",
         f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{attach.job.lower()}"),
        ("emr_instance_profile", "s3:PutObject", "arn:aws:s3:::sched-bucket/daily/latest.json"),
    ]  # fmt: skip
    for doc, action, resource in needs:
        assert _allows(docs[doc], action, resource), (doc, action, resource)
    assert not _allows(docs["state_machine"], "s3:GetObject",
                       "arn:aws:s3:::sched-bucket/daily/2026-12-01/run.json")  # fmt: skip

    # an execution without a date (started by hand) goes by its start time; with one, by it
    # (moto's context object holds StartTime as a datetime it cannot serialise: not evaluated)
    assert states["Today"]["Parameters"] == {"logical_date.$": "$$.Execution.StartTime"}
    went = {n: {"Type": "Pass", "Result": {"went": n}, "End": True} for n in ("Today", "Convert")}
    when = {"StartAt": "When", "States": {"When": states["When"], **went}}
    for data, then in [({}, "Today"), (day, "Convert")]:
        assert json.loads(_execute(sfn, when, data)["output"]) == {"went": then}

    # the training followed by Step Functions: on until it ends, then recorded or failed
    rest = {n: {"Type": "Pass", "Result": {"went": n}, "End": True} for n in ("Record", "Wait")}
    machine = {"StartAt": "Trained", "States": {"Trained": states["Trained"],
                                                "Failed": states["Failed"], **rest}}  # fmt: skip
    for status, ends in [("Completed", "Record"), ("InProgress", "Wait"), ("Stopping", "Wait"),
                         ("Failed", "Failed"), ("Stopped", "Failed")]:  # fmt: skip
        data = day | {"training": {"status": status, "secondary": "MaxRuntimeExceeded"}}
        desc = _execute(sfn, machine, data)
        if ends == "Failed":
            assert desc["status"] == "FAILED", desc
            cause = desc.get("cause", "")
            assert attach.job in cause and status in cause and attach.run in cause, desc
        else:
            assert desc["status"] == "SUCCEEDED" and json.loads(desc["output"]) == {"went": ends}


@pytest.mark.aws
def test_the_eventbridge_schedule_is_a_request_the_scheduler_accepts(sfn, tmp_path, capsys):
    request = _schedule(tmp_path, capsys, "--eventbridge")
    assert not _service_problems("scheduler", "CreateSchedule", request)
    boto3.client("scheduler", region_name="us-east-1").create_schedule(**request)
    target = request["Target"]
    docs = policies(load_config(CONF, SETS))
    assert _allows(docs["scheduler"], "states:StartExecution", target["Arn"])
    trust = docs["scheduler_trust"]["Statement"][0]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert target["Arn"] == "arn:aws:states:us-east-1:123456789012:stateMachine:sagemaker-shards"
    # each occurrence passes its own time, which the steps take as the logical date
    assert json.loads(target["Input"]) == {"logical_date": "<aws.scheduler.scheduled-time>"}


@pytest.mark.parametrize(
    "change, message",
    [
        (["output.path=s3://sched-bucket/daily/latest", "output.keep=null"], "has no {date}"),
        (["output.mode=error"], "set output.mode: resume"),
        (["training.backend=none"], "training.backend: sagemaker"),
    ],
)
def test_a_schedule_that_cannot_work_is_refused_before_anything_is_uploaded(
    tmp_path, capsys, change, message
):
    argv = ["schedule", "--cluster-id", CLUSTER, "--config", CONF, "--dist", str(tmp_path)]
    assert main(argv + [a for s in [*SETS, *change] for a in ("--set", s)]) == 2
    assert message in capsys.readouterr().err
