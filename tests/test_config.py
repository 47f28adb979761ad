"""Config: YAML + --set overrides, unknown keys and bad values rejected by name."""

from __future__ import annotations

import functools
import re

import pytest

from jobs.config import dated, load_config, logical_date, resolve_templates
from jobs.errors import ConfigError

REPO_CONF = "conf/local.yaml"


def test_embedded_default_loads():
    cfg = load_config(REPO_CONF)
    assert cfg.select.label == "CAST(target = 0 AS FLOAT)"
    assert set(cfg.channels()) == {"train", "validation", "test"}


def test_overrides_are_parsed_as_yaml_and_typed():
    cfg = load_config(
        REPO_CONF,
        [
            "output.max_shard_mb=64",
            "select.features.columns=[a, b]",
            "training.hyperparameters.epochs=3",
            "spark.conf.spark.sql.shuffle.partitions=8",
            "s3.sse=aws:kms",
            "s3.kms_key_id=alias/x",
        ],
    )
    assert cfg.output.max_shard_mb == 64
    assert cfg.select.features.columns == ["a", "b"]
    assert cfg.training.hyperparameters == {"epochs": 15, "mini_batch_size": 100} | {"epochs": 3}
    assert cfg.spark.conf == {"spark.sql.shuffle.partitions": "8"}
    assert cfg.s3.put_args() == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/x"}


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "output.max_shard_md=3",
            "unknown config key 'output.max_shard_md' (did you mean output.max_shard_mb?)",
        ),
        ("outptu.path=x", "unknown config key 'outptu' (did you mean output?)"),
        ("output.mode=append", "output.mode = 'append': expected one of error | overwrite"),
        ("output.shards=two", "output.shards: expected a number, got 'two'"),
        ("output.shards=1.5", "output.shards: expected a whole number, got 1.5"),
        ("s3.part_size_mb=1", "s3.part_size_mb must be at least 5"),
        ("s3.part_size_mb=6000", "s3.part_size_mb must be at most 5120"),
        ("select.features.array=px", None),
        ("input.split={train: 0.5, test: 0.2}", "input: give either paths"),
        ("no_equals_sign", "expected key.path=value"),
    ],
)
def test_bad_values_are_named(override, message):
    if message is None:  # two feature forms at once
        with pytest.raises(ConfigError, match="set only one of columns, array"):
            load_config(REPO_CONF, ["select.features.columns=[a]", override])
        return
    with pytest.raises(ConfigError) as info:
        load_config(REPO_CONF, [override])
    assert message in str(info.value)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_config(tmp_path / "nope.yaml")


# -- footguns: what --set and YAML would otherwise turn into something else -------------------


@pytest.mark.parametrize(
    "override, field, expected",
    [
        ("select.label=no", ("select", "label"), "no"),  # the column "no", not False
        ("select.label=Yes", ("select", "label"), "Yes"),
        ("output.path=0755", ("output", "path"), "0755"),  # the path, not 493
        ("output.path=1e3", ("output", "path"), "1e3"),
        ("select.features.columns=[on, 010]", ("select", "features", "columns"), ["on", "010"]),
        ("training.sagemaker.tags={team: no, cost: 012}", ("training", "sagemaker", "tags"),
         {"team": "no", "cost": "012"}),
        ("select.label=null", ("select", "label"), None),  # unlabelled: the YAML null
        ("output.shards=012", ("output", "shards"), 12),  # numbers stay numbers
        ("training.hyperparameters.use_bias=no", ("training", "hyperparameters"),
         {"epochs": 15, "mini_batch_size": 100, "use_bias": False}),
    ],
)  # fmt: skip
def test_string_settings_keep_the_text_as_typed(override, field, expected):
    cfg = load_config(REPO_CONF, [override])
    value = cfg
    for name in field:
        value = getattr(value, name)
    assert value == expected


def test_yaml_files_keep_string_text_too(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("input:\n  paths:\n    train: [2024-01-01, off]\nselect:\n  label: n\n")
    cfg = load_config(conf)
    assert cfg.input.paths == {"train": ["2024-01-01", "off"]} and cfg.select.label == "n"


@pytest.mark.parametrize(
    "override, message",
    [
        ("output.path=", "output.path: a value is required"),
        ("output.path=''", "output.path is empty: name a folder (local or s3://) for the run"),
        ("output.mode=", "output.mode: a value is required"),
        ("select.features.columns=[a", "--set select.features.columns=[a: not valid YAML ("),
        ("input.paths.train=[]", "input.paths.train is empty: list at least one Parquet file"),
        ("input.paths.train=['']", "input.paths.train has an empty path"),
        ("output.lease_timeout_s=0", "output.lease_timeout_s must be positive"),
    ],
)
def test_footguns_are_refused_by_name(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(REPO_CONF, [override])
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_a_text_setting_takes_sql_that_is_not_yaml():
    """Spark SQL with backticks or ``: `` cannot be YAML; a text setting takes it as typed,
    any other setting still refuses it."""
    cfg = load_config(REPO_CONF, ["select.label=`Weird name` > 1", "input.filter=`a: b` = 1"])
    assert cfg.select.label == "`Weird name` > 1" and cfg.input.filter == "`a: b` = 1"
    with pytest.raises(ConfigError, match=r"--set output.max_shard_mb=`1`: not valid YAML"):
        load_config(REPO_CONF, ["output.max_shard_mb=`1`"])


def test_a_broken_config_file_is_one_line_with_its_line_number(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("input:\n  paths:\n    train: [a\nselect: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(conf)
    assert str(info.value).startswith(f"config file {conf} is not valid YAML (line 4): ")
    assert "\n" not in str(info.value)


# -- paths, before Spark starts --------------------------------------------------------------


def _paths(**settings):
    from jobs.preflight import check_paths

    cfg = load_config(None, [f"{k}={v}" for k, v in settings.items()])
    check_paths(cfg)


def test_no_input_is_refused():
    with pytest.raises(ConfigError, match="input: nothing to read; set input.paths.train"):
        _paths(**{"output.path": "out"})


@pytest.mark.parametrize(
    "inputs, message",
    [
        ("[s3://b/in/a.parquet, s3a://b/in/a.parquet]",
         "input.paths.train lists s3a://b/in/a.parquet twice (s3://b/in/a.parquet)"),
        ("[s3://b/in/, s3://b/in/a.parquet]",
         "input.paths.train: s3://b/in/a.parquet is inside s3://b/in/, so its rows would be "
         "read twice"),
    ],
)  # fmt: skip
def test_an_input_listed_twice_is_refused(inputs, message):
    with pytest.raises(ConfigError) as info:
        _paths(**{"input.paths.train": inputs, "output.path": "s3://b/out"})
    assert str(info.value) == message


@pytest.mark.parametrize(
    "inp, out, message",
    [
        ("s3a://b/proj/in", "s3://b/proj",
         "input.paths.train s3a://b/proj/in is inside output.path s3://b/proj: the output must "
         "not hold the input (overwrite and cleanup work there); write the run elsewhere"),
        ("s3://b/proj/", "s3a://b/proj/out/",
         "output.path s3a://b/proj/out/ is inside input.paths.train s3://b/proj/: a later run "
         "would read its shards as Parquet; write the run elsewhere"),
        ("s3://b/in/*.parquet", "s3://b/in/out", "output.path s3://b/in/out is inside"),
        ("s3://b/proj-in", "s3://b/proj", None),  # siblings by name only: fine
    ],
)  # fmt: skip
def test_input_and_output_must_not_overlap_on_s3(inp, out, message):
    settings = {"input.paths.train": inp, "output.path": out}
    if message is None:
        _paths(**settings)
        return
    with pytest.raises(ConfigError) as info:
        _paths(**settings)
    assert str(info.value).startswith(message)


def test_input_and_output_must_not_overlap_through_a_symlink(tmp_path):
    (tmp_path / "data" / "in").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "data")
    with pytest.raises(ConfigError, match="is inside output.path"):
        _paths(**{"input.paths.train": tmp_path / "link" / "in", "output.path": tmp_path / "data"})
    with pytest.raises(ConfigError, match="is inside input.paths.train"):
        _paths(**{"input.paths.train": tmp_path / "data", "output.path": tmp_path / "link" / "o"})


def test_an_output_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out.csv").write_text("x")
    with pytest.raises(ConfigError, match=r"output.path .*out.csv is an existing file"):
        _paths(**{"input.paths.train": tmp_path / "in", "output.path": tmp_path / "out.csv"})


@pytest.mark.parametrize(
    "given, date, time",
    [
        ("2026-12-06", "2026-12-06", "000000"),  # Airflow's {{ ds }}, a backfill by hand
        ("2026-12-06T07:00:00Z", "2026-12-06", "070000"),  # EventBridge Scheduler
        ("2026-12-06T07:00:00.123Z", "2026-12-06", "070000"),  # Step Functions' StartTime
        ("2026-12-05T21:30:00-10:00", "2026-12-06", "073000"),  # an offset: its UTC date
    ],
)
def test_a_logical_date_fills_the_templates_in_utc(given, date, time):
    config = load_config(None, ["output.path=s3://b/runs/{date}/{time}-{run_id}"])
    when = logical_date(given)
    resolved = resolve_templates(config, dated(when, "sub-1"))
    assert resolved.output.path == f"s3://b/runs/{date}/{time}-sub-1"
    # a printed step fills only {run_id}; each run fills the rest
    later = resolve_templates(config, {"run_id": "sub-1"})
    assert later.output.path == "s3://b/runs/{date}/{time}-sub-1"
    assert resolve_templates(later, dated(when)).output.path == resolved.output.path


def test_an_unfilled_placeholder_is_named():
    with pytest.raises(ConfigError, match="was the scheduler's placeholder left unfilled"):
        logical_date("<aws.scheduler.scheduled-time>")
    config = load_config(None, ["output.path=s3://b/runs/{day}"])
    with pytest.raises(ConfigError, match=r"unknown template \{day\}"):
        resolve_templates(config, dated(logical_date("2026-12-06")))


def test_config_means_what_it_says(tmp_path, monkeypatch):
    """A second section, a `#` in a --set value, `~` and `$VAR`, a binary file, a zero batch."""
    dup = tmp_path / "dup.yaml"
    dup.write_text("output:\n  path: a\ninput:\n  path: x\noutput:\n  path: b\n")
    with pytest.raises(ConfigError, match=r"key 'output' appears twice \(lines 1 and 5\)"):
        load_config(dup)
    assert load_config(None, ["output.path=runs/exp #3"]).output.path == "runs/exp #3"
    assert load_config(None, ["output.path=runs/exp # 3"]).output.path == "runs/exp # 3"
    assert load_config(None, ["output.max_shard_mb=64 # MB"]).output.max_shard_mb == 64
    monkeypatch.setenv("HOME", str(tmp_path))
    home = load_config(None, ["output.path=~/shards", "input.paths.train=~/in/",
                              "input.paths.test=[~/t1, ~/t2]"])  # fmt: skip
    assert home.output.path == str(tmp_path / "shards")
    assert home.input.paths["train"] == [f"{tmp_path}/in/"]
    assert home.input.paths["test"] == [f"{tmp_path}/t1", f"{tmp_path}/t2"]
    split = load_config(None, ["input.path=[~/a, ~/b]", "input.split={train: 1.0}"])
    assert split.input.path == [f"{tmp_path}/a", f"{tmp_path}/b"]
    monkeypatch.setenv("BUCKET", "my-bucket")
    monkeypatch.delenv("NOPE", raising=False)
    sets = ["input.paths.train=s3://$BUCKET/in", "output.path=${BUCKET}-out",
            "training.local.model_dir=~/m", "emr.log_uri=s3://$BUCKET/logs/"]  # fmt: skip
    var = load_config(None, sets)
    assert var.input.paths["train"] == ["s3://my-bucket/in"]
    assert var.output.path == "my-bucket-out" and var.emr.log_uri == "s3://my-bucket/logs/"
    assert var.training.local.model_dir == str(tmp_path / "m")
    with pytest.raises(ConfigError, match=r"input.paths.test '\$NOPE/t': \$NOPE is not set"):
        load_config(None, ["input.paths.test=$NOPE/t"])
    binary = tmp_path / "conf.yaml"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00\xd0\xff")
    with pytest.raises(ConfigError, match="is not a text"):
        load_config(binary)
    with pytest.raises(ConfigError, match="read.batch_rows must be at least 1"):
        load_config(None, ["read.batch_rows=0"])


def _numeric_settings(cls=None, prefix=""):
    """Every int or float leaf of the settings, as a dotted key."""
    import dataclasses
    import typing

    from jobs.settings import JobConfig

    cls = cls or JobConfig
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        args = set(typing.get_args(hint)) - {type(None)} or {hint}
        key = f"{prefix}{f.name}"
        if any(dataclasses.is_dataclass(a) for a in args):
            yield from _numeric_settings(next(iter(args)), key + ".")
        elif args & {int, float} and not args & {bool, str}:
            yield key


# numbers that go into CreateTrainingJob: botocore's service model checks them (preflight)
REQUEST_NUMBERS = {
    "training.sagemaker.instance_count",
    "training.sagemaker.volume_size_gb",
    "training.sagemaker.max_runtime_seconds",
    "training.sagemaker.max_wait_seconds",
    "training.sagemaker.max_retry_attempts",
}


def test_every_numeric_setting_has_a_range_checked_before_anything_runs():
    """A new number in the settings fails here until its range is stated; each bound is
    refused by name, and the bound itself is accepted."""
    from jobs.settings import RANGES

    assert set(_numeric_settings()) - REQUEST_NUMBERS == set(RANGES)
    base = ["training.predictor_type=multiclass_classifier", "training.num_classes=3",
            "output.path=runs/{date}"]  # fmt: skip
    for key, bound in RANGES.items():
        if bound.low is not None:
            step = 0.5 if bound.above else 1
            below = bound.low if bound.above else bound.low - step
            with pytest.raises(ConfigError, match=rf"^{re.escape(key)} must be .*: got "):
                load_config(None, [*base, f"{key}={below}"])
            ok = bound.low + (step if bound.above else 0)
            assert (
                functools.reduce(getattr, key.split("."), load_config(None, [*base, f"{key}={ok}"]))
                == ok
            )
        if bound.high is not None:
            with pytest.raises(ConfigError, match=rf"^{re.escape(key)} must be at most "):
                load_config(None, [*base, f"{key}={bound.high + 1}"])
            load_config(None, [*base, f"{key}={bound.high}"])


def test_the_configuration_page_is_current():
    """docs/configuration.md is generated from jobs/settings.py (`make docs`): a key, default,
    range or comment changed there and not here fails; every key has a meaning."""
    from pathlib import Path

    from jobs.config import reference_page

    page = reference_page()
    assert "|  |\n" not in page, "a setting without a comment in jobs/settings.py"
    current = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    assert current == page, "docs/configuration.md is out of date: run `make docs`"
