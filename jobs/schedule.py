"""`python -m jobs schedule`: the daily job as an AWS Step Functions state machine (Amazon
States Language), and the EventBridge Scheduler schedule that starts it (``--eventbridge``).

One execution is one logical date::

    When      the input's ``logical_date`` (the schedule's <aws.scheduler.scheduled-time>, or
              a date for a backfill), else the execution's start time
    Convert   elasticmapreduce:addStep.sync: ``run --no-wait`` on the cluster. It commits the
              run (output.mode: resume: a retry keeps a committed run), creates the training
              job (named by the run: a retry finds it) and ends; it leaves a handoff naming
              run and job at <series parent>/_schedule/<execution name>.json
    Job       reads the handoff (s3:GetObject)
    Poll      sagemaker:DescribeTrainingJob, then Wait and Poll again until the job ends:
              the training is followed by Step Functions, never by the cluster
    Record    addStep.sync: ``attach`` records the result by the run, moves "latest" and
              applies output.keep (a minute of the cluster, not the training's hours)

Each state retries what is safe to retry: every cluster step is idempotent by the run.
"""

from __future__ import annotations

import json
import re

from .config import TEMPLATE
from .emr import SCHEDULERS, Submission, asl_string, step_args
from .errors import ConfigError
from .iam import state_machine_arn
from .series import HANDOFF, parent

CONVERT_RETRY = {"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 120,
                 "BackoffRate": 2.0}  # fmt: skip
READ_RETRY = {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 5, "MaxAttempts": 5,
              "BackoffRate": 2.0}  # fmt: skip
RUNNING = ("InProgress", "Stopping")


def check(config, cluster_id: str | None) -> None:
    """What a schedule cannot work without; one line each, before anything is uploaded."""
    if not cluster_id or not re.fullmatch(r"j-[0-9A-Z]{1,255}", cluster_id):
        raise ConfigError(f"--cluster-id {cluster_id!r} is not an EMR cluster id (j-...)")
    if config.training.backend != "sagemaker" or config.emr.command != "run":
        raise ConfigError(
            "schedule runs the conversion on the cluster and follows SageMaker training "
            "outside it: it needs emr.command: run and training.backend: sagemaker"
        )
    if not TEMPLATE.search(config.output.path) or "{date}" not in config.output.path:
        raise ConfigError(
            f"output.path {config.output.path} has no {{date}}: every day would resume the "
            "first day's run instead of converting its own; use e.g. s3://bucket/shards/{date}"
        )
    if config.output.mode != "resume":
        raise ConfigError(
            f"output.mode {config.output.mode}: a retried or rerun day must keep its committed "
            "run and find its training job; set output.mode: resume"
        )
    if parent(config.output.path).scheme != "s3":
        raise ConfigError(f"output.path {config.output.path} must be on s3:// for a schedule")


def _format(before: str, after: str, *values: str) -> str:
    """``States.Format('<before>{}<after>', values…)`` with the literals escaped."""
    template = asl_string(before)[:-1] + "{}" + asl_string(after)[1:]
    return f"States.Format({', '.join([template, *values])})"


def _array(parts: list[str]) -> str:
    """``States.Array`` of literal strings and (unquoted) paths or intrinsic calls."""
    return f"States.Array({', '.join(parts)})"


def _cluster_task(
    config, sub: Submission, cluster_id: str, name: str, command: list[str],
    dynamic: list[str], retries: int, **then,
) -> dict:  # fmt: skip
    """An addStep.sync task: the spark-submit of ``emr-step`` with ``command``'s literal
    arguments, then ``dynamic`` ones (paths and intrinsics the execution fills in); its
    result (the step's description) is dropped, and a failed step is tried ``retries`` more
    times (every step of ours is idempotent by the run)."""
    literal = step_args(config, sub, command)
    step = {
        "Name.$": _format(f"{config.emr.step_name} {name} ", "", "$.logical_date"),
        "ActionOnFailure": config.emr.action_on_failure,
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args.$": _array([*map(asl_string, literal), *dynamic]),
        },
    }
    retry = {"Retry": [CONVERT_RETRY | {"MaxAttempts": retries}]} if retries > 0 else {}
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::elasticmapreduce:addStep.sync",
        "Parameters": {"ClusterId": cluster_id, "Step": step},
        "ResultPath": None,
        **retry,
        **then,
    }


def state_machine(config, sub: Submission, cluster_id: str) -> dict:
    """The ASL document (JSONPath query language)."""
    check(config, cluster_id)
    sm = config.training.sagemaker
    base = parent(config.output.path)
    folder = base.join(HANDOFF).key.rstrip("/") + "/"
    handoff = _format(folder, ".json", "$$.Execution.Name")
    handoff_uri = _format(f"s3://{base.bucket}/{folder}", ".json", "$$.Execution.Name")
    owner = {"ExpectedBucketOwner": config.s3.expected_bucket_owner} if (
        config.s3.expected_bucket_owner) else {}  # fmt: skip
    return {
        "Comment": f"{config.emr.step_name}: convert on EMR cluster {cluster_id}, train on "
        "SageMaker, record the result (python -m jobs schedule)",
        "StartAt": "When",
        "States": {
            "When": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.logical_date", "IsPresent": True, "Next": "Convert"}],
                "Default": "Today",
            },
            "Today": {
                "Type": "Pass",
                "Parameters": {"logical_date.$": "$$.Execution.StartTime"},
                "Next": "Convert",
            },
            "Convert": _cluster_task(
                config,
                sub,
                cluster_id,
                "convert",
                ["run", "--no-wait"],
                ["'--logical-date'", "$.logical_date", "'--handoff'", handoff_uri],
                config.schedule.convert_retries,
                Next="Job",
            ),  # fmt: skip
            "Job": {
                "Type": "Task",
                "Resource": "arn:aws:states:::aws-sdk:s3:getObject",
                "Parameters": {"Bucket": base.bucket, "Key.$": handoff, **owner},
                "ResultSelector": {"handoff.$": "States.StringToJson($.Body)"},
                "ResultPath": "$.job",
                "Retry": [READ_RETRY],
                "Next": "Poll",
            },
            "Poll": {
                "Type": "Task",
                "Resource": "arn:aws:states:::aws-sdk:sagemaker:describeTrainingJob",
                "Parameters": {"TrainingJobName.$": "$.job.handoff.job_name"},
                "ResultSelector": {
                    "status.$": "$.TrainingJobStatus",
                    "secondary.$": "$.SecondaryStatus",
                },  # fmt: skip
                "ResultPath": "$.training",
                "Retry": [READ_RETRY],
                "Next": "Trained",
            },
            "Trained": {
                "Type": "Choice",
                "Choices": [
                    {
                        "Variable": "$.training.status",
                        "StringEquals": "Completed",
                        "Next": "Record",
                    },
                    *(
                        {"Variable": "$.training.status", "StringEquals": s, "Next": "Wait"}
                        for s in RUNNING
                    ),
                ],  # fmt: skip
                "Default": "Failed",
            },
            "Wait": {"Type": "Wait", "Seconds": max(60, int(sm.poll_seconds)), "Next": "Poll"},
            "Record": _cluster_task(
                config,
                sub,
                cluster_id,
                "record",
                ["attach"],
                [
                    "$.job.handoff.job_name",
                    "'--run'",
                    "$.job.handoff.run",
                    "'--logical-date'",
                    "$.logical_date",
                ],
                2,
                End=True,
            ),  # fmt: skip
            "Failed": {
                "Type": "Fail",
                "Error": "TrainingJobFailed",
                "CausePath": "States.Format('training job {} of {} ended {} ({})', "
                "$.job.handoff.job_name, $.job.handoff.run, $.training.status, "
                "$.training.secondary)",
            },
        },
    }


def eventbridge_schedule(config, cluster_id: str) -> dict:
    """The EventBridge Scheduler CreateSchedule request that starts the state machine on
    ``schedule.expression``, passing each occurrence's time as the logical date."""
    check(config, cluster_id)
    sch = config.schedule
    if not sch.scheduler_role_arn:
        raise ConfigError(
            "schedule.scheduler_role_arn is not set: EventBridge Scheduler starts the state "
            "machine as that role (iam-policy prints its policy and trust)"
        )
    return {
        "Name": sch.name,
        "ScheduleExpression": sch.expression,
        "ScheduleExpressionTimezone": sch.timezone,
        "FlexibleTimeWindow": {"Mode": "OFF"},
        "State": "ENABLED",
        "Target": {
            "Arn": state_machine_arn(config),
            "RoleArn": sch.scheduler_role_arn,
            "Input": json.dumps({"logical_date": SCHEDULERS["eventbridge"]}),
            "RetryPolicy": {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 3600},
        },
    }
