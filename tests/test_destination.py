"""The output location as a user's data shares it: their own files, siblings on S3, a run that
fails while replacing another, two runs at once, a run whose lease is taken over mid-way.
Local Spark, real files, the moto server; concurrent runs are separate CLI processes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from faultproxy import Fault
from helpers import (
    cli_sets,
    config,
    pending_uploads,
    read_run,
    relative_key,
    s3_objects,
    sorted_rows,
    write_columns,
)

from jobs.errors import ConfigError, InputError, StorageError
from jobs.runinfo import load_run
from jobs.spark_job import convert
from jobs.storage import Store
from jobs.training.sagemaker import train_sagemaker

pytestmark = [pytest.mark.spark, pytest.mark.aws]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(12)
    x = rng.random((3000, 20), dtype=np.float32)
    y = rng.integers(0, 2, 3000)
    src = write_columns(tmp_path_factory.mktemp("dest") / "in", x, y, files=3)
    return src, x, y.astype(np.float32)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _upload(s3, bucket: str, keys: list[str]) -> dict[str, int]:
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=f"user data {key}".encode())
    return {k: len(f"user data {k}") for k in keys}


def test_a_users_files_under_the_output_are_never_removed(spark, data, tmp_path):
    proj = tmp_path / "proj"
    customers = proj / "data" / "raw" / "customers.csv"
    customers.parent.mkdir(parents=True)
    customers.write_text("id,name\n1,Ada\n")
    (proj / "training").mkdir()
    (proj / "training" / "notes.txt").write_text("lr 0.1 was too high")
    settings = {"input.paths.train": data[0], "output.path": str(proj)}
    first = convert(config(**settings), spark)  # mode error writes beside them
    before = _digest(proj)
    assert "data/raw/customers.csv" in before and "training/notes.txt" in before

    with pytest.raises(StorageError) as info:
        convert(config(**settings | {"output.mode": "overwrite"}), spark)
    assert str(info.value) == (
        f"output.path {proj} holds 2 objects this tool did not write ({customers}, "
        f"{proj / 'training' / 'notes.txt'}), so output.mode: overwrite will not work there; "
        "write to an empty location or a new subfolder (nothing was changed)"
    )
    assert _digest(proj) == before  # the run and the user's files, byte for byte
    assert load_run(str(proj), Store(), verify=True)[1].run_id == first.run_id


def test_overwrite_on_s3_touches_no_sibling_and_refuses_foreign_objects(
    spark, s3, bucket, moto_server, data
):
    siblings = _upload(
        s3, bucket, ["out-2023.csv", "outdata/x.csv", "out.json", "runs/out/x"]
    )  # fmt: skip
    inside = _upload(
        s3,
        bucket,
        ["out/data_dictionary.csv", "out/database/part-0.csv", "out/run.json.bak",
         "out/manifests-2023.txt", "out/data/raw/customers.csv"],
    )  # fmt: skip
    settings = {
        "input.paths.train": data[0],
        "output.path": f"s3://{bucket}/out",
        "s3.endpoint_url": moto_server,
    }
    first = convert(config(**settings), spark)  # mode error: ours go beside theirs
    with pytest.raises(StorageError) as info:
        convert(config(**settings | {"output.mode": "overwrite"}), spark)
    assert str(info.value).startswith(
        f"output.path s3://{bucket}/out holds 5 objects this tool did not write ("
        f"s3://{bucket}/out/data/raw/customers.csv, s3://{bucket}/out/data_dictionary.csv, "
        f"s3://{bucket}/out/database/part-0.csv and 2 more)"
    )
    after = s3_objects(s3, bucket)
    assert {k: after[k] for k in siblings | inside} == siblings | inside
    assert (
        load_run(f"s3://{bucket}/out", Store(config(**settings).s3), verify=True)[1].run_id
        == first.run_id
    )


def test_overwrite_replaces_a_run_only_once_the_new_one_commits(
    spark, s3, bucket, moto_server, data, tmp_path
):
    siblings = _upload(s3, bucket, ["clean-2023.csv", "clean_data/x.csv", "clean.json"])
    out = f"s3://{bucket}/clean"
    settings = {"input.paths.train": data[0], "output.path": out, "s3.endpoint_url": moto_server}
    store = Store(config(**settings).s3)
    first = convert(config(**settings), spark)
    first_objects = set(s3_objects(s3, bucket, "clean/"))

    # a replacement that fails (a NaN in one file) leaves the first run whole and usable
    bad_x = np.random.default_rng(1).random((300, 20), dtype=np.float32)
    bad_x[150, 3] = np.nan
    bad = write_columns(tmp_path / "bad", bad_x, np.zeros(300, int), files=2)
    with pytest.raises(InputError, match="null, NaN or infinite values"):
        convert(config(**settings | {"input.paths.train": bad, "output.mode": "overwrite"}), spark)
    assert set(s3_objects(s3, bucket, "clean/")) == first_objects
    assert load_run(out, store, verify=True)[1].run_id == first.run_id
    assert not pending_uploads(s3, bucket)

    # the first run is trained on SageMaker (moto); its model, which SageMaker writes into the
    # job's folder (moto does not), may be deployed: an overwrite must not remove it
    trained = config(**settings | {
        "training.backend": "sagemaker", "training.sagemaker.region": "us-east-1",
        "training.sagemaker.role_arn": "arn:aws:iam::123456789012:role/SageMakerRole",
        "training.sagemaker.endpoint_url": moto_server, "training.sagemaker.poll_seconds": 0,
    })  # fmt: skip
    job = train_sagemaker(trained, out, store, load_run(out, store)[1], progress=lambda s: None)
    model = relative_key(job["model_artifact"], bucket)
    assert model.startswith(f"clean/training/sagemaker/{job['job_name']}/")
    served = b"a model someone may be serving"
    s3.put_object(Bucket=bucket, Key=model, Body=served)
    models = {model, f"clean/training/{job['job_name']}.json"}

    second = convert(config(**settings | {"output.mode": "overwrite"}), spark)
    objects = s3_objects(s3, bucket)
    assert {k: objects[k] for k in siblings} == siblings  # never touched
    assert models <= set(objects)
    assert s3.get_object(Bucket=bucket, Key=model)["Body"].read() == served
    ours = sorted(k for k in objects if k.startswith("clean/") and k not in models)
    assert ours and all(second.run_id in k or k == "clean/run.json" for k in ours), ours
    x, y, meta = read_run(out, store)
    assert meta.run_id == second.run_id != first.run_id
    np.testing.assert_array_equal(sorted_rows(x, y), sorted_rows(data[1], data[2]))


def test_a_cleanup_that_fails_does_not_hide_why_the_run_failed(
    spark, s3, bucket, proxy, data, tmp_path, caplog
):
    """A conversion fails (a NaN), and removing its files fails too (the principal may not
    delete): the user reads the cause, and a second line says what was left and how it goes."""
    bad_x = np.random.default_rng(2).random((3000, 20), dtype=np.float32)
    bad_x[2900, 1] = np.nan
    bad = write_columns(tmp_path / "bad", bad_x, np.zeros(3000, int), files=3)
    proxy.add(Fault("DeleteObjects", "deny", times=1000))
    proxy.add(Fault("DeleteObject", "deny", times=1000))
    out = f"s3://{bucket}/kept"
    settings = {"input.paths.train": bad, "output.path": out, "s3.endpoint_url": proxy.url,
                "read.max_task_mb": 1}  # fmt: skip
    with pytest.raises(InputError, match="null, NaN or infinite values"):
        convert(config(**settings), spark)
    (left,) = [r.getMessage() for r in caplog.records if "could not remove" in r.getMessage()]
    assert "nothing was committed" in left and f"output.mode: overwrite at {out}" in left
    assert "kept/run.json" not in s3_objects(s3, bucket, "kept/")


def test_resume_keeps_a_committed_run_and_never_takes_another_conversions(spark, data, tmp_path):
    """output.mode: resume, what a retried step uses: the run an earlier attempt committed is
    kept as it is (no Spark job, no byte changed); a run of another conversion is refused."""
    out = tmp_path / "day"
    settings = {"input.paths.train": data[0], "output.path": str(out), "output.mode": "resume"}
    first = convert(config(**settings), spark)
    before = _digest(out)
    jobs_before = spark.sparkContext.statusTracker().getJobIdsForGroup(None)
    again = convert(config(**settings), spark)
    assert again.run_id == first.run_id and again.channels == first.channels
    assert _digest(out) == before
    assert spark.sparkContext.statusTracker().getJobIdsForGroup(None) == jobs_before
    with pytest.raises(StorageError, match=r"from another conversion \(its select differs\)"):
        convert(config(**settings | {"select.label": "CAST(target = 1 AS FLOAT)"}), spark)
    assert _digest(out) == before


@pytest.mark.processes
def test_overlapping_input_and_output_fail_before_spark_starts(data, tmp_path):
    proj = tmp_path / "proj"
    (proj / "data" / "raw").mkdir(parents=True)
    for f in Path(data[0]).iterdir():
        (proj / "data" / "raw" / f.name).write_bytes(f.read_bytes())
    before = _digest(proj)
    started = time.monotonic()
    run = _cli(
        ["convert", *cli_sets({"input.paths.train": proj / "data" / "raw", "output.path": proj,
                              "output.mode": "overwrite"})], tmp_path,
    )  # fmt: skip
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 2
    assert out.strip().splitlines()[-1] == (
        f"error: input.paths.train {proj / 'data' / 'raw'} is inside output.path {proj}: the "
        "output must not hold the input (overwrite and cleanup work there); write the run "
        "elsewhere"
    )
    assert "SparkContext" not in out and "Setting default log level" not in out
    assert time.monotonic() - started < 30
    assert _digest(proj) == before
    with pytest.raises(ConfigError, match="is inside input.paths.train"):
        convert(config(**{"input.paths.train": proj, "output.path": proj / "data" / "shards"}))


# -- two runs at once ----------------------------------------------------------------------


def _cli(args, cwd, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "jobs", *args],
        cwd=cwd,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _race(settings: dict, cwd) -> list[tuple[int, str]]:
    procs = [_cli(["convert", "--quiet", *cli_sets(settings)], cwd) for _ in range(2)]
    return [(p.wait(timeout=600), p.stdout.read()) for p in procs]


@pytest.mark.processes
@pytest.mark.outside_spark  # the lease is taken before Spark starts
@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.parametrize("mode", ["error", "overwrite"])
def test_two_runs_at_once_never_corrupt_each_other(
    where, mode, data, tmp_path, s3, bucket, moto_server
):
    """Two CLI processes on the same output: one writes, the other is refused with the holder
    named; the result is one whole run and nothing else of ours. Once per mode and store: how
    often the lease itself loses a race is counted with stated power by the lease races of
    test_ownership.py (processes, 15 and 10 rounds); what this adds is the CLI around it."""
    for round_ in range(1):
        out = f"s3://{bucket}/race{round_}" if where == "s3" else str(tmp_path / f"race{round_}")
        settings = {
            "input.paths.train": data[0],
            "output.path": out,
            "output.mode": mode,
            "s3.endpoint_url": moto_server,
            "spark.master": "local[1]",
        }
        outcomes = _race(settings, tmp_path)
        codes = sorted(code for code, _ in outcomes)
        losers = [text for code, text in outcomes if code != 0]
        if mode == "error":
            assert codes == [0, 2], outcomes
        else:
            assert codes in ([0, 0], [0, 2]), outcomes
        for text in losers:
            last = text.strip().splitlines()[-1]
            assert last.startswith(f"error: {out} is being written by run ") or last.startswith(
                f"error: {out} already holds a committed run"
            ), text
        store = Store(config(**settings).s3)
        x, y, meta = read_run(out, store)
        np.testing.assert_array_equal(sorted_rows(x, y), sorted_rows(data[1], data[2]))
        if where == "s3":
            keys = list(s3_objects(s3, bucket, f"race{round_}/"))
            assert not pending_uploads(s3, bucket, f"race{round_}/")
        else:
            keys = [str(p) for p in Path(out).rglob("*") if p.is_file()]
        assert all(meta.run_id in k or k.endswith("run.json") for k in keys), keys


@pytest.mark.processes
def test_a_run_whose_lease_is_taken_over_stops_and_removes_only_its_own_files(
    spark, s3, bucket, proxy, data, tmp_path
):
    out = f"s3://{bucket}/contested"
    settings = {
        "input.paths.train": data[0],
        "output.path": out,
        "output.encoding": "dense",
        "output.lease_timeout_s": 2,  # renewed every 0.5 s
        "s3.endpoint_url": proxy.url,
        "s3.max_attempts": 2,
        "spark.master": "local[1]",
        "read.batch_rows": 100,
    }
    # the first run's shard writes crawl, so it is mid-way when the second one forces in
    proxy.add(Fault("PutObject", "delay", key="contested/data/", seconds=1.5, times=1000))
    first = _cli(["convert", *cli_sets(settings)], tmp_path)
    deadline = time.time() + 120

    def writing():
        return [s for s in proxy.ops("PutObject") if "/data/" in s.key]

    while not writing() and time.time() < deadline:
        time.sleep(0.1)
    assert writing(), "the first run never started writing"
    holder = json.loads(s3.get_object(Bucket=bucket, Key="contested/_lease.json")["Body"].read())
    proxy.reset()
    # the second run keeps the lease until the first has exited, so the first can name it
    proxy.add(Fault("DeleteObject", "call", key="contested/_lease.json", forward=True,
                    call=lambda _: first.wait(timeout=120)))  # fmt: skip
    second = convert(config(**settings | {"output.mode": "overwrite",
                                          "output.take_over_lease": "true"}), spark)  # fmt: skip
    text, _ = first.communicate(timeout=300)
    assert first.returncode == 2, text
    assert (
        text.strip()
        .splitlines()[-1]
        .startswith(
            f"error: run {holder['run_id']} lost its lease on {out}: it was taken over by run "
            f"{second.run_id}"
        )
    ), text
    keys = list(s3_objects(s3, bucket, "contested/"))
    assert keys and all(second.run_id in k or k.endswith("run.json") for k in keys), keys
    assert not pending_uploads(s3, bucket, "contested/")
    x, y, _ = read_run(out, Store(config(**settings).s3))
    np.testing.assert_array_equal(sorted_rows(x, y), sorted_rows(data[1], data[2]))
