"""What is ours at an output location, and the one-writer lease: real files, real processes
racing for the lease (locally and on the moto server's S3), a holder killed with SIGKILL."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from jobs.errors import StorageError
from jobs.lease import Holder, LeaseHeld, LeaseLost, take
from jobs.runinfo import RunLayout, classify, new_run_id
from jobs.storage import Location, S3Settings, Store

RID = "20261126-053406-3fa2c1"


@pytest.mark.parametrize(
    "key, kind",
    [
        ("run.json", "metadata"),
        ("_lease.json", "lease"),
        (f"data/train/part-00000-000-{RID}.recordio", "shard"),
        ("data/validation/part-00012-003.recordio", "shard"),  # before run ids
        (f"data/train/part-00000-000-{RID}.recordio.{'a' * 32}.tmp", "shard"),
        (f"manifests/test-{RID}.manifest", "manifest"),
        ("manifests/train.manifest", "manifest"),
        ("training/local/model.pkl", "training"),
        ("training/ll-20261126-053406-123.json", "training"),
        ("training/sagemaker/ll-20261126-053406-123/output/model.tar.gz", "job-output"),
        # a user's files, however close to our names
        ("data/raw/customers.csv", None),
        ("data/train/customers.parquet", None),
        ("data/train/part-00000.parquet", None),
        ("data/dictionary/part-00000-000.recordio", None),
        ("run.json.bak", None),
        ("manifests/train.manifest.bak", None),
        ("training/notes.txt", None),
        ("training/local/model.pkl.old", None),
        ("README.md", None),
    ],
)
def test_only_whole_names_of_our_layout_are_ours(key, kind):
    owned = classify(key, Location.parse(f"s3://b/out/{key}"))
    assert (owned.kind if owned else None) == kind
    if owned and RID in key:
        assert owned.run_id == RID


def test_s3_folders_end_in_a_slash_and_spellings_agree():
    out = Location.parse("s3a://bucket/out")
    assert out == Location.parse("s3://bucket/out/").resolved()
    assert out.folder == "out/"
    assert out.contains(Location.parse("s3://bucket/out/data/x"))
    assert not out.contains(Location.parse("s3://bucket/out-2023.csv"))
    assert not out.contains(Location.parse("s3://bucket/outdata/x"))
    assert not out.contains(Location.parse("s3://other/out/x"))
    assert Location.parse("s3://bucket").contains(out)


def test_local_paths_compare_after_symlinks(tmp_path):
    real = tmp_path / "real"
    (real / "in").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    assert Location.parse(str(tmp_path / "link")).contains(Location.parse(str(real / "in")))
    assert not Location.parse(str(tmp_path / "re")).contains(Location.parse(str(real)))


def _write(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_survey_sorts_a_folder_into_ours_and_foreign(tmp_path):
    root = tmp_path / "proj"
    ours = [
        _write(root / "data" / "train" / f"part-00000-000-{RID}.recordio"),
        _write(root / "manifests" / f"train-{RID}.manifest"),
        _write(root / "training" / "job-1.json"),
        _write(root / "training" / "sagemaker" / "job-1" / "output" / "model.tar.gz"),
    ]
    _write(root / "run.json", json.dumps({"format": "sagemaker-shards/1", "run_id": RID}).encode())
    foreign = [
        _write(root / "data" / "raw" / "customers.csv"),
        _write(root / "training" / "sagemaker" / "job-2" / "output" / "model.tar.gz"),
    ]
    survey = RunLayout.at(str(root)).survey(Store())
    assert sorted(o.loc.key for o in survey.ours) == sorted(
        [str(p) for p in ours] + [str(root / "run.json")]
    )
    assert [loc.key for loc in survey.foreign] == sorted(str(p) for p in foreign)
    assert survey.metadata["run_id"] == RID


def test_a_run_json_of_someone_else_is_foreign(tmp_path):
    _write(tmp_path / "run.json", b'{"experiment": 7}')
    survey = RunLayout.at(str(tmp_path)).survey(Store())
    assert survey.metadata is None and [p.key for p in survey.foreign] == [
        str(tmp_path / "run.json")
    ]


def test_overwrite_refuses_a_folder_with_foreign_files_and_touches_nothing(tmp_path):
    root = tmp_path / "proj"
    customers = _write(root / "data" / "raw" / "customers.csv", b"id,name\n1,a\n")
    shard = _write(root / "data" / "train" / f"part-00000-000-{RID}.recordio")
    _write(root / "run.json", json.dumps({"format": "sagemaker-shards/1", "run_id": RID}).encode())
    layout = RunLayout.at(str(root), new_run_id())
    with pytest.raises(StorageError) as info:
        layout.prepare(Store(), "overwrite")
    assert str(info.value) == (
        f"output.path {root} holds 1 object this tool did not write ({customers}), so "
        "output.mode: overwrite will not work there; write to an empty location or a new "
        "subfolder (nothing was changed)"
    )
    assert customers.read_bytes() == b"id,name\n1,a\n" and shard.exists()


def test_overwrite_replaces_a_runs_shards_but_never_its_models(tmp_path):
    root = tmp_path / "proj"
    shards = [
        _write(root / "data" / "train" / f"part-00000-000-{RID}.recordio"),
        _write(root / "manifests" / f"train-{RID}.manifest"),
        _write(root / "data" / "train" / f"part-00001-000-{RID}.recordio.{'0' * 32}.tmp"),
    ]
    _write(root / "training" / "job-1.json")
    _write(root / "training" / "sagemaker" / "job-1" / "output" / "model.tar.gz")
    _write(root / "training" / "local" / "model.pkl")
    _write(root / "training" / "local" / "result.json")
    _write(root / "run.json", json.dumps({"format": "sagemaker-shards/1", "run_id": RID}).encode())
    replaced = RunLayout.at(str(root), new_run_id()).prepare(Store(), "overwrite")
    assert sorted(loc.key for loc in replaced) == sorted(str(p) for p in shards)


def test_files_named_like_ours_without_a_marker_are_not_removed(tmp_path):
    shard = _write(tmp_path / "data" / "train" / "part-00000-000.recordio")
    with pytest.raises(StorageError, match="no run.json or lease of this tool marks them"):
        RunLayout.at(str(tmp_path), new_run_id()).prepare(Store(), "overwrite")
    assert shard.exists()
    # a taken-over lease of this tool is such a marker
    replaced = RunLayout.at(str(tmp_path), new_run_id()).prepare(Store(), "overwrite", RID)
    assert [loc.key for loc in replaced] == [str(shard)]


# -- the lease --------------------------------------------------------------------------------


def _race(args):
    """One contender: wait for all, then try to take the lease; a winner holds it until every
    contender has tried (on a loaded machine a fixed pause let a late one take it after the
    release: two winners one after the other, not at once). Reports the outcome."""
    start, tried, settings, uri, index = args
    store = Store(settings)
    start.wait(120)
    try:
        lease = take(store, uri, "error", False, 60)
    except LeaseHeld as exc:
        tried.wait(120)
        return ("held", str(exc))
    tried.wait(120)
    lease.release()
    return ("won", lease.run_id)


def _contend(settings, uri, contenders: int) -> list[tuple[str, str]]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        start, tried = manager.Barrier(contenders), manager.Barrier(contenders)
        args = [(start, tried, settings, uri, i) for i in range(contenders)]
        with ctx.Pool(contenders) as pool:
            return pool.map(_race, args)


def _assert_one_winner(outcomes, uri):
    won = [o for o in outcomes if o[0] == "won"]
    assert len(won) == 1, outcomes
    for kind, message in outcomes:
        if kind == "held":
            assert message.startswith(f"{uri} is being written by run {won[0][1]} (pid ")


# Rounds for a stated detection power: a lease that lets two contenders win once in k races is
# caught with probability 1 - (1 - 1/k)^rounds: 15 rounds catch k = 5 with 96 %, 10 rounds
# catch k = 3 with 98 % (S3's conditional write is one request; the local one is link + rename).
@pytest.mark.processes
def test_processes_racing_for_a_local_lease_get_exactly_one_winner(tmp_path):
    for round_ in range(15):
        uri = str(tmp_path / f"out{round_}")
        outcomes = _contend(S3Settings(), uri, 4)
        _assert_one_winner(outcomes, uri)
        assert not (tmp_path / f"out{round_}" / "_lease.json").exists()


@pytest.mark.aws
@pytest.mark.processes
def test_processes_racing_for_an_s3_lease_get_exactly_one_winner(s3, bucket, s3_settings):
    for round_ in range(10):
        uri = f"s3://{bucket}/out{round_}"
        _assert_one_winner(_contend(s3_settings, uri, 4), uri)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)  # every lease released


HOLD = """
import sys, time
from jobs.lease import take
from jobs.storage import Store
lease = take(Store(), sys.argv[1], "error", False, 3600)
print(lease.run_id, flush=True)
time.sleep(600)
"""


@pytest.mark.processes
def test_a_killed_holder_is_named_and_taken_over_only_as_asked(tmp_path):
    uri = str(tmp_path / "out")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, uri], stdout=subprocess.PIPE, text=True)
    run_id = holder.stdout.readline().strip()
    store = Store()
    with pytest.raises(LeaseHeld, match=rf"is being written by run {run_id} \(pid {holder.pid} "):
        take(store, uri, "overwrite", False, 3600)  # alive: even overwrite waits
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with pytest.raises(LeaseHeld) as info:
        take(store, uri, "error", False, 3600)
    assert f"leased to run {run_id} (pid {holder.pid} on " in str(info.value)
    assert str(info.value).endswith(
        "but its process is gone: rerun with output.mode: overwrite to take it over and "
        "replace what that run left, or with --force"
    )
    lease = take(store, uri, "overwrite", False, 3600)
    assert lease.previous.run_id == run_id and lease.previous.pid == holder.pid
    lease.release()
    assert not (tmp_path / "out" / "_lease.json").exists()


def _lease_of_another_host(loc: Location, renewed_ago: float) -> None:
    now = time.time()
    other = Holder(RID, "ip-10-0-0-7", 4242, "hadoop", "main.py run", now - 7200,
                   now - renewed_ago, 600)  # fmt: skip
    Store().put(loc, other.dump())


def test_a_lease_not_renewed_within_its_timeout_is_stale(tmp_path):
    uri = str(tmp_path / "out")
    loc = RunLayout.at(uri).lease
    _lease_of_another_host(loc, renewed_ago=30)
    with pytest.raises(LeaseHeld, match="renewed 30 s ago"):
        take(Store(), uri, "overwrite", False, 600)  # fresh: a live driver elsewhere
    _lease_of_another_host(loc, renewed_ago=3600)
    with pytest.raises(LeaseHeld, match=r"it stopped renewing it 60 min ago \(timeout 10 min\)"):
        take(Store(), uri, "error", False, 600)
    take(Store(), uri, "overwrite", False, 600).release()
    # --force takes over even a fresh one
    _lease_of_another_host(loc, renewed_ago=1)
    lease = take(Store(), uri, "error", True, 600)
    assert lease.previous.host == "ip-10-0-0-7"
    lease.release()


@pytest.mark.parametrize("where", ["local", pytest.param("s3", marks=pytest.mark.aws)])
def test_a_run_that_lost_its_lease_notices_and_never_removes_the_new_one(where, tmp_path, request):
    if where == "s3":
        s3 = request.getfixturevalue("s3")
        settings = request.getfixturevalue("s3_settings")
        name = f"lease-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=name)
        uri = f"s3://{name}/out"
    else:
        settings, uri = S3Settings(), str(tmp_path / "out")
    store = Store(settings)
    first = take(store, uri, "error", False, 600)
    first.renew()
    second = take(store, uri, "error", True, 600)  # --force
    assert second.previous.run_id == first.run_id
    with pytest.raises(LeaseLost) as info:
        first.renew()
    assert str(info.value).startswith(
        f"run {first.run_id} lost its lease on {uri}: it was taken over by run {second.run_id}"
    )
    first.release()  # must not remove the second run's lease
    assert second.held
    second.renew()
    second.release()
    assert store.read_versioned(RunLayout.at(uri).lease) is None


def test_the_lease_renews_itself_and_reports_a_loss(tmp_path):
    uri = str(tmp_path / "out")
    lost = []
    lease = take(Store(), uri, "error", False, 2)  # renewed every 0.5 s
    lease.on_lost(lambda: lost.append(True))
    time.sleep(3)  # past the timeout: only renewals keep it fresh
    with pytest.raises(LeaseHeld, match="is being written by"):
        take(Store(), uri, "overwrite", False, 2)
    take(Store(), uri, "error", True, 2)  # --force
    deadline = time.time() + 5
    while not lost and time.time() < deadline:
        time.sleep(0.1)
    assert lost and lease.lost.startswith(f"run {lease.run_id} lost its lease")
    lease.release()
