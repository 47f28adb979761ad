"""The cluster artifact on a node that is not the build machine.

`make package` builds dist/jobs.pex. A Spark standalone master and worker, started from a copy
of Spark outside the build venv (as a cluster's /usr/lib/spark), run spark-submit with driver
and executors on the PEX under Debian's own /usr/bin/python3.11, inside a private mount
namespace where the build venv, the checkout and the build interpreter (pyenv) are hidden
behind empty mounts. Both read paths, and `run` with the local trainer; run.json says which
interpreter the tasks ran.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pyspark
import pytest
from conftest import REPO
from helpers import free_port

pytestmark = [pytest.mark.spark, pytest.mark.processes]

NODE_PYTHON = "/usr/bin/python3.11"  # Debian's here, EMR 7.1+'s on a cluster
BUILD_PYTHON = Path(os.path.realpath(sys.executable))


# everything `make package` reads: the same bytes build the same artifact
PACKAGE_INPUTS = ("jobs/**/*", "pyproject.toml", "README.md", "constraints.txt", "Makefile",
                  "conf/emr.yaml", "conf/emr-bootstrap.sh", "scripts/*.py")  # fmt: skip


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """`make package` into a temp dir, once per content of its inputs: the Spark 4 pass of
    `.ci/run` runs the artifact the Spark 3.5 pass built from the same checkout (a build takes
    over a minute). The checkout is left as it was, but for build/pex-<digest>."""
    digest = hashlib.sha256()
    for pattern in PACKAGE_INPUTS:
        for path in sorted(REPO.glob(pattern)):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    kept = REPO / "build" / f"pex-{digest.hexdigest()[:16]}"
    out = tmp_path_factory.mktemp("dist")  # outside the checkout, which the node hides
    if (kept / "jobs.pex").is_file():
        shutil.copytree(kept, out, dirs_exist_ok=True)
        return out
    build = subprocess.run(
        ["make", "package", f"DIST={out}"], cwd=REPO, capture_output=True, text=True, timeout=1500
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    for old in kept.parent.glob("pex-*"):
        shutil.rmtree(old, ignore_errors=True)
    kept.parent.mkdir(exist_ok=True)
    shutil.copytree(out, kept.with_suffix(".tmp"))
    os.replace(kept.with_suffix(".tmp"), kept)  # whole or absent
    return out


def _pex_info(dist: Path) -> dict:
    return json.loads(zipfile.ZipFile(dist / "jobs.pex").read("PEX-INFO"))


def test_the_pex_carries_both_architectures_and_no_interpreter_or_spark(dist):
    info = _pex_info(dist)
    wheels = list(info["distributions"])
    names = {w.split("-")[0].lower().replace("_", "-") for w in wheels}
    assert {"jobs", "numpy", "pyarrow", "pandas", "boto3", "pyyaml", "sqlglot",
            "regex"} <= names  # fmt: skip
    assert not names & {"pyspark", "py4j"}  # the cluster's Spark provides them
    assert not names & {"scikit-learn", "scipy"}  # the local trainer's: SageMaker trains there
    for package in ("numpy", "pyarrow", "pandas", "regex"):
        mine = [w for w in wheels if w.lower().startswith(package + "-")]
        assert any("x86_64" in w for w in mine) and any("aarch64" in w for w in mine), mine
    for wheel in wheels:  # CPython 3.11 or pure, and no newer glibc than Amazon Linux 2023's
        tags = wheel.removesuffix(".whl").split("-")[-3:]
        assert tags[0] in ("cp311", "py3", "py2.py3", "cp311.cp312.cp313"), wheel
        for glibc in re.findall(r"manylinux_(\d+)_(\d+)", tags[2]):
            assert (int(glibc[0]), int(glibc[1])) <= (2, 34), wheel
    assert info["inherit_path"] == "fallback"
    head = (dist / "jobs.pex").open("rb").readline()
    assert head == b"#!/usr/bin/python3.11\n"

    def norm(pins):
        return {re.sub(r"[-_.]+", "-", p.lower()) for p in pins if "==" in p}

    pins = norm((dist / "runtime-constraints.txt").read_text().split())
    constraints = norm((REPO / "constraints.txt").read_text().split())
    assert len(pins) > 10 and pins <= constraints  # the versions `make test` ran with


NAMESPACE = r"""
set -euo pipefail
# a node: Spark installed outside any venv, the build venv, checkout and pyenv hidden
mkdir -p "$W/spark"
mount --bind "$PYSPARK_DIR" "$W/spark"
mount -t tmpfs tmpfs "$HIDE_PYENV"
mount -t tmpfs tmpfs "$HIDE_REPO"
if [ -e "$BUILD_PYTHON" ] || [ -e "$HIDE_REPO/.venv" ]; then echo "build env visible"; exit 9; fi
cd "$W"
export SPARK_HOME="$W/spark" SPARK_LOCAL_IP=127.0.0.1 PATH=/usr/bin:/bin
"$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master --host 127.0.0.1 \
  --port "$PORT" --webui-port "$UI" > "$W/master.log" 2>&1 &
"$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker --cores 2 --memory 2g \
  --webui-port "$UI2" --work-dir "$W/worker" "spark://127.0.0.1:$PORT" > "$W/worker.log" 2>&1 &
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
sleep 3
# both steps at once, as a scheduler may submit them: one core each; every container of the
# node (both drivers, both executors) unpacks into the node's one PEX_ROOT, as emr-step says
for run in 1 2; do
  "$SPARK_HOME/bin/spark-submit" --master "spark://127.0.0.1:$PORT" \
    --files "$DIST/jobs.pex" \
    --conf spark.pyspark.python=./jobs.pex \
    --conf "spark.pyspark.driver.python=$DIST/jobs.pex" \
    --conf "spark.executorEnv.PEX_ROOT=$PEX_ROOT" \
    --conf spark.executor.memory=1g --conf spark.cores.max=1 \
    "$DIST/main.py" $(cat "$W/args-$run") > "$W/run-$run.log" 2>&1 &
  eval "step$run=$!"
done
wait "$step1" || { cat "$W/run-1.log"; exit 101; }
wait "$step2" || { cat "$W/run-2.log"; exit 102; }
# a retry of step 2, committed already, as YARN's application master runs the driver there
SPARK_YARN_STAGING_DIR="$W/staging" "$SPARK_HOME/bin/spark-submit" \
  --master "spark://127.0.0.1:$PORT" --files "$DIST/jobs.pex" \
  --conf spark.pyspark.python=./jobs.pex --conf "spark.pyspark.driver.python=$DIST/jobs.pex" \
  --conf spark.cores.max=1 "$DIST/main.py" $(cat "$W/args-3") > "$W/run-3.log" 2>&1 \
  || { cat "$W/run-3.log"; exit 103; }
cat "$W/run-1.log" "$W/run-2.log" "$W/run-3.log"
"""


@pytest.mark.aws
def test_spark_submit_runs_the_pex_on_another_python_with_the_build_hidden(
    dist, tmp_path, moto_server, s3, bucket
):
    if not Path(NODE_PYTHON).is_file():
        pytest.fail(f"{NODE_PYTHON} is missing: `make setup` installs Debian's python3.11")
    assert os.path.realpath(NODE_PYTHON) != str(BUILD_PYTHON)  # really another interpreter
    if not shutil.which("unshare"):
        pytest.fail("unshare (util-linux) is needed to hide the build environment")
    sample = subprocess.run(
        [sys.executable, "-m", "jobs", "sample", "--out", str(tmp_path / "digits")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert sample.returncode == 0, sample.stderr
    w = tmp_path / "node"
    w.mkdir()
    inputs = "".join(
        f"    {c}: {tmp_path / 'digits' / c}\n" for c in ("train", "validation", "test")
    )
    common = ("select:\n  label: CAST(target = 0 AS FLOAT)\nspark:\n  master: null\n"
              f"input:\n  paths:\n{inputs}")  # fmt: skip
    (w / "spark.yaml").write_text(
        common + f"output:\n  path: {tmp_path / 'out-spark'}\nread:\n  path: spark\n"
        "training:\n  backend: none\n"
    )
    (w / "direct.yaml").write_text(  # as on EMR: S3 out, SageMaker training (both moto)
        common + f"output:\n  path: s3://{bucket}/out-direct\nread:\n  path: direct\n"
        f"s3:\n  endpoint_url: {moto_server}\n  region: us-east-1\n"
        "training:\n  backend: sagemaker\n  hyperparameters: {epochs: 2}\n  sagemaker:\n"
        "    region: us-east-1\n    role_arn: arn:aws:iam::123456789012:role/SageMakerRole\n"
        f"    endpoint_url: {moto_server}\n    poll_seconds: 0\n"
    )
    (w / "args-1").write_text(f"convert --config {w / 'spark.yaml'}")
    (w / "args-2").write_text(f"run --config {w / 'direct.yaml'} --no-wait")  # as emr-step
    (w / "args-3").write_text(  # its retry
        f"run --config {w / 'direct.yaml'} --no-wait --set output.mode=resume"
    )
    pyenv = Path(str(BUILD_PYTHON).split("/versions/")[0])  # …/.pyenv
    env = {
        "W": str(w), "DIST": str(dist), "PYSPARK_DIR": str(Path(pyspark.__file__).parent),
        "HIDE_PYENV": str(pyenv), "HIDE_REPO": str(REPO), "BUILD_PYTHON": str(BUILD_PYTHON),
        "PORT": str(free_port()),
        "UI": str(free_port()), "UI2": str(free_port()), "PATH": "/usr/bin:/bin",
        "HOME": str(w), "PEX_ROOT": str(w / "node-pex"),
        "JAVA_HOME": os.environ.get("JAVA_HOME", ""),
        **{k: os.environ.get(k, "") for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
           "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED")},
    }  # fmt: skip
    assert str(BUILD_PYTHON).startswith(str(pyenv)) or str(BUILD_PYTHON).startswith(str(REPO))
    node = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", NAMESPACE],
        env={k: v for k, v in env.items() if v}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    logs = node.stdout[-3000:] + node.stderr[-5000:]
    assert node.returncode == 0, logs
    direct = json.loads(s3.get_object(Bucket=bucket, Key="out-direct/run.json")["Body"].read())
    spark = json.loads((tmp_path / "out-spark" / "run.json").read_text())
    for meta, path in ((spark, "spark"), (direct, "direct")):
        assert meta["read_path"] == path
        assert sum(c["rows"] for c in meta["channels"].values()) == 1797
        # the driver and every task ran the node's interpreter (the PEX re-executes it)
        assert meta["pythons"]["driver"].split()[0] == NODE_PYTHON, meta["pythons"]
        assert {p.split()[0] for p in meta["pythons"]["tasks"]} == {NODE_PYTHON}, meta["pythons"]
        assert meta["pythons"]["tasks"][0].split()[1] != sys.version.split()[0]
    # the step ended once its training job was created (the cluster route: --no-wait); its
    # retry found that job (one record: one job) and followed it no more than the step did
    (record,) = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="out-direct/training/")
                 ["Contents"]]  # fmt: skip
    step2 = (w / "run-2.log").read_text()
    assert "started training job" in step2 and "sagemaker: InProgress" in step2, step2
    # the retry kept the committed run and found its job; with nothing for Spark to do, it
    # still started a SparkContext, without which YARN fails a cluster-mode application
    retry = (w / "run-3.log").read_text()
    assert "kept, not converted again" in retry and "exists for this run" in retry, retry
    assert "SparkContext: Running Spark version" in retry, retry
    assert "no Spark work was needed" in retry, retry
    # every container of the node used the node's one unpacked copy, none its own
    assert (w / "node-pex" / "installed_wheels").is_dir()
    assert not list((w / "worker").rglob("installed_wheels")), "a container unpacked its own"
