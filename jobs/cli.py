"""``python -m jobs``: sample, convert, train, run, inspect (and emr-step).

User errors (bad config, bad input, a refused destination, a failed training job) print one
line and exit 2; ``--debug`` shows the traceback. Anything unexpected exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from .errors import JobError

log = logging.getLogger("jobs")

DEFAULT_CONFIG = "conf/local.yaml"
WRITERS = ("convert", "train", "run")  # they write at a run location: lease, signals


def _common(p: argparse.ArgumentParser, config: bool = True) -> None:
    if config:
        p.add_argument(
            "--config", metavar="FILE", help=f"YAML config (default: {DEFAULT_CONFIG} if present)"
        )
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY.PATH=VALUE",
            help="override one config value (YAML syntax), repeatable: --set output.mode=overwrite",
        )
    if config:
        p.add_argument(
            "--logical-date", metavar="DATE",
            help="the date this run is for (2026-12-06 or an ISO 8601 time; default: now, "
            "UTC): fills {date} and {time} in output paths. A scheduled step passes its "
            "schedule's; a backfill passes an earlier one",
        )  # fmt: skip
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("--quiet", action="store_true", help="only warnings and the final result")


def _sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--synthetic", action="store_true", help="random MNIST-shaped rows instead")
    p.add_argument("--rows", type=int, default=60_000)
    p.add_argument("--features", type=int, default=784)
    p.add_argument("--files", type=int, default=16)
    p.add_argument("--density", type=float, default=0.2, help="fraction of non-zero features")
    p.add_argument("--seed", type=int, default=0)


def _train_args(p: argparse.ArgumentParser, run: bool = True) -> None:
    if run:
        p.add_argument("--run", metavar="LOCATION", help="run location (default: output.path)")
    p.add_argument(
        "--no-wait", action="store_true", help="SageMaker: start the job, print its name, exit 0"
    )
    p.add_argument(
        "--detach",
        action="store_true",
        help="SageMaker: on Ctrl-C stop following but leave the job running",
    )
    p.add_argument(
        "--retrain",
        action="store_true",
        help="SageMaker: start a new job even when this run's job for the same request exists "
        "(by default it is found and followed, never started twice)",
    )


def _run_args(p: argparse.ArgumentParser) -> None:
    _train_args(p, run=False)
    p.add_argument(
        "--handoff", metavar="URI", help="when done, write the run's location and its "
        "training job's name there as JSON (what a `schedule` state machine reads)",
    )  # fmt: skip


def _schedule_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster-id", required=True, metavar="J-XXXX", help="the EMR cluster")
    p.add_argument("--dist", default="dist", help="where `make package` put the artifacts")
    p.add_argument(
        "--eventbridge", action="store_true",
        help="print the EventBridge Scheduler CreateSchedule request that starts the state "
        "machine every day (schedule.expression) instead of the state machine",
    )  # fmt: skip


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="SHARD|DIR|S3_PREFIX|MANIFEST|RUN")
    p.add_argument("--head", type=int, default=3, help="rows to show (default 3)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-verify", action="store_true", help="skip the checksum comparison")


def _job_args(p: argparse.ArgumentParser, run: bool = False) -> None:
    p.add_argument("job", metavar="JOB", help="the SageMaker training job's name")
    if run:
        p.add_argument(
            "--run", metavar="LOCATION", help="the run whose training/ gets the result JSON "
            "(default: output.path when it holds a committed run)",
        )  # fmt: skip


def _emr_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cluster-id", required=False, metavar="J-XXXX")
    p.add_argument("--dist", default="dist", help="where `make package` put the artifacts")
    p.add_argument(
        "--print", dest="print_only", action="store_true",
        help="upload the artifacts and print the step JSON (for a scheduler) instead of adding it",
    )  # fmt: skip
    p.add_argument("--wait", action="store_true", help="follow the step to its end")
    p.add_argument(
        "--scheduler", choices=["eventbridge", "stepfunctions", "airflow", "none"],
        default="none",
        help="with --print: the scheduler that submits the step every day; the step carries "
        "its placeholder for the logical date (none: each run's start time, UTC)",
    )  # fmt: skip


# name, help, description, its own arguments, whether it reads a config
_PARSERS = [
    (
        "sample",
        "write sample Parquet input (scikit-learn's digits, or synthetic MNIST-shaped rows)",
        "Write the handwritten digits (1,797 8x8 images, classic layout: columns '0'..'63' + "
        "target) split into DIR/train, DIR/validation, DIR/test; or with --synthetic a large "
        "MNIST-shaped set for benchmarks in DIR.",
        _sample_args,
        False,
    ),
    (
        "convert",
        "run the Spark job: Parquet → committed RecordIO-protobuf shards",
        "Read the configured Parquet inputs, select label and features, validate, encode per "
        "partition, stream shards to output.path and commit manifests + run.json.",
        None,
        True,
    ),
    (
        "train",
        "train on a committed run (training.backend: local | sagemaker)",
        "Train on the committed run at --run (default output.path): the local stand-in "
        "trainer, or a SageMaker linear-learner training job followed to its end.",
        _train_args,
        True,
    ),
    (
        "run",
        "convert, then train, then print a summary",
        "The whole pipeline: the Spark conversion, then training on its run.",
        _run_args,
        True,
    ),
    (
        "inspect",
        "decode and check shards: a file, directory, s3 prefix, manifest or run",
        "Decode every record; print records, feature_dim, encoding, label histogram and the "
        "first rows; for a run, verify each shard's checksum (output.checksum, as S3 keeps it) "
        "and count against run.json. Exits non-zero on any corrupt record or mismatch.",
        _inspect_args,
        True,
    ),
    (
        "attach",
        "follow an existing SageMaker training job to its end",
        "Follow JOB (started with --no-wait, or by a driver that died) with status, transitions "
        "and logs, then write its result JSON by the run and exit as train would (0 when "
        "Completed). Ctrl-C stops following; the job keeps running.",
        lambda p: _job_args(p, run=True),
        True,
    ),
    (
        "logs",
        "print a SageMaker training job's logs",
        "Print JOB's CloudWatch log lines.",
        _job_args,
        True,
    ),
    ("stop", "stop a SageMaker training job", "Ask SageMaker to stop JOB.", _job_args, True),
    (
        "iam-policy",
        "print least-privilege IAM policies for the config",
        "Print, as JSON, the IAM policy documents the config needs: for whoever submits "
        "(emr-step, attach, logs, stop), for the EMR instance profile the job runs as, and for "
        "the SageMaker execution role (with its trust policy), scoped to the config's buckets "
        "and prefixes, KMS key and role.",
        lambda p: None,
        True,
    ),
    (
        "emr-step",
        "upload dist/ artifacts and add a spark-submit step to an EMR cluster",
        "Upload dist/jobs.pex, dist/main.py and the resolved config (--set applied, {date}, "
        "{time}, {run_id} in output paths filled in) to content-named keys under "
        "emr.artifacts_uri, check the cluster's release (emr-7.1.0 or later 7.x), then add a "
        "command-runner.jar spark-submit step. --print uploads and prints the step instead.",
        _emr_args,
        True,
    ),
    (
        "schedule",
        "print a Step Functions state machine that runs the job every day",
        "Upload the artifacts as `emr-step --print` does and print the state machine (Amazon "
        "States Language): the conversion as a step on the cluster, the SageMaker training "
        'followed by Step Functions (not the cluster), then the result, "latest" and '
        "output.keep recorded by a short step. Each execution's input may name its "
        "logical_date (a backfill); else its start time is used. --eventbridge prints the "
        "schedule that starts it daily.",
        _schedule_args,
        True,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m jobs",
        description="Parquet → SageMaker RecordIO-protobuf shards with Spark, and linear-learner "
        "training on them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_, description, own_args, reads_config in _PARSERS:
        p = sub.add_parser(name, help=help_, description=description)
        if own_args is not None:
            own_args(p)
        if name in WRITERS:
            p.add_argument(
                "--force",
                action="store_true",
                help="take over the output's lease even if another run renewed it recently "
                "(only when you know that run is dead; see README, Reliability)",
            )
        _common(p, config=reads_config)
    return parser


def _config(args):
    from pathlib import Path

    from .config import load_config, logical_date, resolve_run, submission_id

    path = args.config
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    overrides = list(args.overrides)
    if getattr(args, "force", False):
        overrides.append("output.take_over_lease=true")
    config = load_config(path, overrides)
    when = logical_date(args.logical_date)
    args.now = when
    if args.command in ("emr-step", "iam-policy", "schedule"):  # the cluster's; a policy's `*`
        return config
    resolved = resolve_run(config, when, submission_id(when))
    if resolved.output.path != config.output.path:
        log.info("output.path %s for %s: %s", config.output.path, when.date(), resolved.output.path)
    return resolved


def _setup_logging(args) -> None:
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def cmd_sample(args) -> int:
    from .sample import write_digits, write_synthetic

    if args.synthetic:
        n = write_synthetic(args.out, args.rows, args.features, args.files, args.density, args.seed)
        shape = f"{n:,} synthetic rows × {args.features} features"
        print(f"wrote {shape} in {args.files} files to {args.out}")
    else:
        counts = write_digits(args.out)
        listed = ", ".join(f"{c} {n}" for c, n in counts.items())
        print(f"wrote scikit-learn's digits to {args.out}: {listed} rows")
    return 0


def _convert(config, lease=None, release_spark=False) -> tuple[dict, float]:
    from .spark_job import convert

    t0 = time.perf_counter()
    meta = convert(config, lease=lease, release_spark=release_spark)
    return meta, time.perf_counter() - t0


def _lease(config, uri: str):
    """This process's lease on ``uri`` for everything it writes there."""
    from .lease import take
    from .storage import Store, require_credentials

    require_credentials([uri], "the run is there")
    out = config.output
    return take(Store(config.s3), uri, out.mode, out.take_over_lease, out.lease_timeout_s)


def _conversion_rows(meta: dict, seconds: float) -> list[tuple[str, str]]:
    rows = [
        ("read path", f"{meta.read_path} ({meta.read_path_reason})"),
        ("encoding", f"{meta.encoding}, feature_dim {meta.feature_dim}"),
    ]
    total = 0
    for channel, info in meta.channels.items():
        total += info.rows
        rows.append(
            (
                f"{channel}",
                f"{info.rows:,} rows, {len(info.shards)} shards, "
                f"{info.bytes / 1e6:.2f} MB, labels {json.dumps(info.labels)}",
            )
        )
    rows.append(("conversion", f"{seconds:.1f} s ({total / max(seconds, 1e-9):,.0f} rows/s)"))
    return rows


def _check_training(config) -> None:
    """Before any data is read or written: the training section, as far as the config alone
    allows (hyperparameters, and for SageMaker the whole request against botocore's model)."""
    if config.training.backend == "none":
        return
    from .training.hyperparameters import for_config

    for_config(config.training)
    if config.training.backend == "sagemaker":
        from .training.sagemaker import preflight

        preflight(config)
    elif config.training.backend == "local":
        from .training.local import require_scikit_learn

        require_scikit_learn()


def cmd_convert(args) -> int:
    config = _config(args)
    _check_training(config)
    meta, seconds = _convert(config)
    print(f"\ncommitted {config.output.path}\n" + _table(_conversion_rows(meta, seconds)))
    return 0


def _train(config, run_uri: str, args, lease=None) -> dict:
    from .runinfo import load_run
    from .storage import Store, require_credentials

    store = Store(config.s3)
    backend = config.training.backend
    if backend == "none":
        raise JobError("training.backend is none: nothing to train")
    require_credentials([run_uri], "training reads the run there")
    if lease is None:
        load_run(run_uri, store)  # no committed run: say so before asking for the lease
        with _lease(config, run_uri) as lease:
            return _train(config, run_uri, args, lease)
    _, meta = load_run(run_uri, store, verify=True, repair=True)
    if backend == "local":
        from .training.local import train_local

        return train_local(config.training, run_uri, store, meta, progress=print)
    from .training.sagemaker import train_sagemaker

    return train_sagemaker(
        config, run_uri, store, meta, wait=not args.no_wait, detach=args.detach, progress=print,
        retrain=args.retrain,
    )  # fmt: skip


def _trained(config, run_uri: str, result: dict) -> dict:
    """After a run's training completed: its series' "latest" and retention (series.py)."""
    from .series import after_training
    from .storage import Store

    after_training(Store(config.s3), run_uri, result)
    return result


def _training_rows(result: dict) -> list[tuple[str, str]]:
    rows = [("training", f"{result.get('backend')}: {result.get('status')}")]
    if result.get("job_name"):
        rows.append(("job", result["job_name"]))
    for name, value in sorted(result.get("metrics", {}).items()):
        if not name.startswith("train:"):
            rows.append((name, f"{value:.4f}"))
    if result.get("model_artifact"):
        rows.append(("model", result["model_artifact"]))
    if result.get("notice"):
        rows.append(("note", result["notice"]))
    return rows


def cmd_train(args) -> int:
    config = _config(args)
    run_uri = args.run or config.output.path
    result = _trained(config, run_uri, _train(config, run_uri, args))
    print("\n" + _table(_training_rows(result)))
    return 0


def cmd_run(args) -> int:
    from .preflight import check_paths

    config = _config(args)
    check_paths(config)
    _check_training(config)
    with _lease(config, config.output.path) as lease:  # one writer for both stages
        log.info("stage 1/2: conversion (Spark)")
        training = config.training.backend != "none"
        meta, seconds = _convert(config, lease, release_spark=training)
        rows = _conversion_rows(meta, seconds)
        if training:
            log.info("stage 2/2: training (%s)", config.training.backend)
            result = _train(config, config.output.path, args, lease)
            rows += _training_rows(_trained(config, config.output.path, result))
            if args.handoff:
                _handoff(config, args.handoff, result)
    print(f"\nSummary: {config.output.path}\n" + _table(rows))
    return 0


def _handoff(config, uri: str, result: dict) -> None:
    """The run and its training job, for whoever follows the job outside (a state machine)."""
    from .storage import Location, Store

    record = {
        "run": config.output.path,
        "job_name": result.get("job_name"),
        "status": result.get("status"),
        "logical_date": config.output.logical_date,
    }
    Store(config.s3).put_json(Location.parse(uri), record)
    log.info("handoff: %s", uri)


def cmd_schedule(args) -> int:
    from . import emr, schedule
    from .storage import Store

    config = _config(args)
    schedule.check(config, args.cluster_id)
    _check_training(config)
    if args.eventbridge:
        print(json.dumps(schedule.eventbridge_schedule(config, args.cluster_id), indent=2))
        return 0
    sub = emr.prepare(config, args.dist, scheduled=True)
    emr.upload(sub, Store(config.s3))
    print(json.dumps(schedule.state_machine(config, sub, args.cluster_id), indent=2))
    print(json.dumps(emr.describe(sub)), file=sys.stderr)
    return 0


def cmd_attach(args) -> int:
    from .runinfo import load_run
    from .storage import Store
    from .training.sagemaker import attach

    config = _config(args)
    store = Store(config.s3)
    run_uri = args.run or config.output.path
    try:
        load_run(run_uri, store)
    except JobError:
        if args.run:
            raise
        log.info("no committed run at %s: the result JSON is printed only", run_uri)
        run_uri = None
    result = attach(config, args.job, run_uri, store)
    if run_uri:
        _trained(config, run_uri, result)
    print("\n" + _table(_training_rows(result)))
    return 0


def cmd_logs(args) -> int:
    from .training.sagemaker import print_logs

    if not print_logs(_config(args), args.job):
        log.info("no log lines for %s (yet)", args.job)
    return 0


def cmd_stop(args) -> int:
    from .training.sagemaker import stop

    print(f"{args.job}: stop requested; status {stop(_config(args), args.job)}")
    return 0


def cmd_iam_policy(args) -> int:
    from .iam import policies

    print(json.dumps(policies(_config(args)), indent=2))
    return 0


def cmd_inspect(args) -> int:
    from .inspection import format_report, inspect
    from .storage import Store

    config = _config(args)
    report = inspect(Store(config.s3), args.target, head=args.head, verify=not args.no_verify)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    if report["problems"]:
        print(f"error: {report['problems'][0]}", file=sys.stderr)
        return 3
    return 0


def cmd_emr_step(args) -> int:
    from . import emr
    from .errors import ConfigError

    config = _config(args)
    _check_training(config)
    if args.print_only:
        recorded = emr.print_step(config, args.dist, args.scheduler)
        print(json.dumps(recorded), file=sys.stderr)
        return 0
    if not args.cluster_id:
        raise ConfigError("--cluster-id is required (or use --print)")
    sub = emr.submit(config, args.cluster_id, args.dist, args.wait, now=args.now)
    if args.wait and emr.follows_outside(config):  # the step ended when its job was created
        from .storage import Store
        from .training.sagemaker import follow_run

        run_uri = sub.config.output.path
        result = _trained(config, run_uri, follow_run(sub.config, Store(config.s3), run_uri))
        print("\n" + _table(_training_rows(result)))
    return 0


COMMANDS = {
    "sample": cmd_sample,
    "convert": cmd_convert,
    "train": cmd_train,
    "run": cmd_run,
    "inspect": cmd_inspect,
    "attach": cmd_attach,
    "logs": cmd_logs,
    "stop": cmd_stop,
    "iam-policy": cmd_iam_policy,
    "emr-step": cmd_emr_step,
    "schedule": cmd_schedule,
}


def main(argv: list[str] | None = None) -> int:
    from .interrupts import INTERRUPTS, Interrupted

    args = build_parser().parse_args(argv)
    _setup_logging(args)
    if args.command in WRITERS:
        INTERRUPTS.install()  # SIGINT/SIGTERM: cancel, clean up, one line, exit 130/143
    handler = COMMANDS[args.command]
    try:
        return handler(args)
    except JobError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as exc:
        if args.debug:
            raise
        print(exc.message, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head`: the reader has what it wanted; say nothing more
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor at exit's flush
        return 141  # as a process killed by SIGPIPE
    except Exception as exc:
        if args.debug:
            raise
        from .aws import describe_failure

        failure = describe_failure(exc)
        if failure is None and isinstance(exc, OSError) and exc.strerror:
            where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f)
            failure = f"{exc.strerror}{': ' + where if where else ''}"
        if failure is not None:
            print(f"error: {failure}", file=sys.stderr)
            return 2
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
