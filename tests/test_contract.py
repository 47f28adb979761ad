"""The run contract and one task's whole path to a committed run, on local disk, no Spark:
task → typed reports → summarize_run → commit → load_run → read back."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from helpers import config, read_run

from jobs import codec
from jobs.contract import (
    RunMetadata,
    ShardReport,
    TaskFailure,
    TaskReport,
    label_key,
    report_from_json,
    report_to_json,
    summarize_run,
)
from jobs.errors import InputError
from jobs.inspection import inspect
from jobs.parquet import Inventory
from jobs.planning import choose_read_path, decide, selector
from jobs.runinfo import RunLayout, load_run, new_run_id
from jobs.storage import Location, Store
from jobs.task import TaskPlan, write_partition


def test_one_label_spelling_everywhere():
    assert [label_key(v) for v in (0, 1.0, 0.1, -2.5, np.float32(0.1), 3e9)] == [
        "0", "1", "0.1", "-2.5", "0.1", "3000000000",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "report",
    [
        ShardReport("train", "part-00000-000-x.recordio", 3, 10, 400, "ab" * 32, {"0": 4, "1": 6}),
        TaskReport(3, None, "f.parquet", 0.5, 120.0, 11, 1, 0, 30, 44),
        TaskFailure(3, "f.parquet", "label: 1 row in f.parquet with …"),
    ],
)
def test_reports_survive_their_json_trip(report):
    assert report_from_json(report_to_json(report)) == report


def _run(tmp_path, x, y, labels_as=np.float32, **settings):
    """One task writes a partition; summarize, commit; returns (metadata, layout)."""
    cfg = config(**{"input.paths.train": str(tmp_path / "in"), "output.path": str(tmp_path / "out"),
                    "output.encoding": "dense", "select.label": "y", **settings})  # fmt: skip
    names = [str(j) for j in range(x.shape[1])]
    batch = pa.RecordBatch.from_pydict(
        {**{n: x[:, j] for j, n in enumerate(names)}, "y": pa.array(y.astype(labels_as))}
    )
    read = choose_read_path(cfg, Inventory((), batch.schema), False)
    plan = decide(cfg, read, "columns", names, batch)
    layout = RunLayout.at(cfg.output.path, new_run_id())
    task = TaskPlan(cfg.output.path, layout.run_id, cfg.s3, selector(cfg, read, "columns",
                    names, plan.feature_dim), plan.encoding, plan.feature_dim, 1 << 20,
                    channel="train")  # fmt: skip
    reports = list(write_partition(task, 0, [batch.slice(0, 60), batch.slice(60)], "in/x"))
    meta = summarize_run(reports, plan, cfg, ["train"], cfg.channels(), "test")
    return layout.commit(Store(), meta), layout


def test_a_task_commit_and_load_round_trip_on_local_disk(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((100, 4), dtype=np.float32)
    y = rng.integers(0, 2, 100)
    committed, layout = _run(tmp_path, x, y)
    _, loaded = load_run(str(tmp_path / "out"), Store(), verify=True)
    assert loaded == committed  # run.json reads back as the same typed record
    assert loaded.channels["train"].labels == {"0": int((y == 0).sum()), "1": int((y == 1).sum())}
    assert json.loads((tmp_path / "out" / "run.json").read_text())["run_id"] == layout.run_id
    got_x, got_y, _ = read_run(str(tmp_path / "out"))
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    # inspection spells labels the same way as the run
    assert inspect(Store(), str(tmp_path / "out"))["labels"] == loaded.channels["train"].labels


def test_regressor_labels_keep_no_histogram_and_fractional_labels_one_spelling(tmp_path):
    x = np.ones((4, 2), np.float32)
    committed, _ = _run(tmp_path, x, np.array([0.1, 0.1, 2.5, 0.0]),
                        **{"training.predictor_type": "regressor"})  # fmt: skip
    assert committed.channels["train"].labels == {}
    shard = next((tmp_path / "out" / "data" / "train").iterdir())
    report = inspect(Store(), str(shard))
    assert report["labels"] == {"0": 1, "0.1": 2, "2.5": 1}


def test_summaries_name_data_errors_and_empty_channels(tmp_path):
    cfg = config(**{"input.paths.train": "in", "input.paths.test": "t", "output.path": "out",
                    "input.filter": "a > 9"})  # fmt: skip
    schema = pa.schema([("a", pa.float64()), ("target", pa.int64())])
    read = choose_read_path(cfg, Inventory((), schema), False)
    plan = decide(cfg, read, "columns", ["a"], None)
    failures = [TaskFailure(i, f"f{i}", f"bad {i}") for i in range(3)]
    with pytest.raises(InputError, match=r"^bad 0 \(and 2 more tasks failed the same checks\)$"):
        summarize_run(failures, plan, cfg, ["train"], {}, "v")
    shard = ShardReport("train", "k", 0, 5, 50, "00", {})
    empty = TaskReport(1, "test", "t", 0.1, 1.0, 0, 0, 0, 0, 0)
    with pytest.raises(InputError) as info:
        summarize_run([shard, empty], plan, cfg, ["train", "test"], {}, "v")
    assert str(info.value) == (
        "channel test: no rows to write: input.filter 'a > 9' keeps none of the input's rows; "
        "an empty channel would fail training"
    )


def test_run_json_from_an_older_version_still_loads(tmp_path):
    old = {"format": "sagemaker-shards/1", "feature_dim": 2, "encoding": "dense",
           "labelled": True, "predictor_type": "binary_classifier", "read_path": "direct",
           "read_path_reason": "r", "features": {"form": "columns", "columns": ["a", "b"]},
           "label": "y", "channels": {"train": {"rows": 1, "bytes": 40, "labels": {"1": 1},
           "shards": [{"key": "part-00000-000.recordio", "rows": 1, "bytes": 40,
                       "sha256": "0"}], "manifest": "m", "data_prefix": "p/"}},
           "field_of_the_future": 1}  # fmt: skip
    meta = RunMetadata.from_dict(old)
    assert meta.run_id is None and meta.channels["train"].shards[0].key.endswith(".recordio")


def test_a_local_shard_writer_leaves_nothing_when_aborted(tmp_path):
    from jobs.storage import open_shard

    dest = Location.parse(str(tmp_path / "data" / "train" / "s.recordio"))
    with pytest.raises(RuntimeError):
        with open_shard(dest, Store().settings) as w:
            w.write(codec.encode_dense(np.ones((2, 2), np.float32)))
            raise RuntimeError("a failure mid-shard")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]
