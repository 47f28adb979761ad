"""Config: YAML + --set overrides, unknown keys and bad values rejected by name."""

from __future__ import annotations

import pytest

from jobs.config import load_config
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
