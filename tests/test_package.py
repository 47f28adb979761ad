"""The packaged artifacts run under the real spark-submit (local mode), away from the source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pyspark
import pytest
from conftest import REPO

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """`make package` into a temp dir: the checkout is left as it was."""
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        ["make", "package", f"DIST={out}"], cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    return out


def test_spark_submit_runs_the_packaged_job(dist, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    driver_env = tmp_path / "driver-env"
    with tarfile.open(dist / "env.tar.gz") as tar:
        tar.extractall(driver_env, filter="fully_trusted")
    sample = subprocess.run(
        [sys.executable, "-m", "jobs", "sample", "--out", str(tmp_path / "digits")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert sample.returncode == 0, sample.stderr
    conf = work / "job.yaml"
    conf.write_text(
        "input:\n  paths:\n"
        + "".join(f"    {c}: {tmp_path / 'digits' / c}\n" for c in ("train", "validation", "test"))
        + f"output:\n  path: {tmp_path / 'out'}\n"
        + "select:\n  label: CAST(target = 0 AS FLOAT)\nspark:\n  master: null\n"
        + "training:\n  backend: none\n"
    )
    spark_submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYSPARK", "PYTHON", "VIRTUAL_ENV"))
    }
    # local mode unpacks --archives under SparkFiles, not the working directory YARN uses, so
    # here driver and executors both run the unpacked dist/env.tar.gz
    env["PYSPARK_PYTHON"] = env["PYSPARK_DRIVER_PYTHON"] = str(driver_env / "bin" / "python")
    env["PATH"] = "/usr/bin:/bin"
    run = subprocess.run(
        [str(spark_submit), "--master", "local[2]",
         str(dist / "main.py"), "convert", "--config", str(conf)],
        cwd=work, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]
    assert "committed" in run.stdout and "1,257 rows" in run.stdout
    out = tmp_path / "out"
    assert (out / "run.json").is_file()
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    assert sorted(p.name for p in (out / "manifests").iterdir()) == [
        f"{c}-{run_id}.manifest" for c in ("test", "train", "validation")
    ]
    # the job ran from the packaged wheel, not this source tree
    probe = subprocess.run(
        [str(driver_env / "bin" / "python"), "-c", "import jobs; print(jobs.__file__)"],
        cwd=work, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert str(driver_env) in probe.stdout and str(REPO) not in probe.stdout
