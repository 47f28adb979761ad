"""Typed job configuration: a YAML file plus ``--set key.path=value`` overrides.

Every section is a dataclass, so an unknown key is rejected by name (with the closest valid one
suggested) before Spark starts or anything is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ConfigError
from .runinfo import CHANNELS
from .settings import S3Settings

PREDICTOR_TYPES = ("binary_classifier", "multiclass_classifier", "regressor")


@dataclass
class FeatureSpec:
    """Exactly one of columns / pattern / array / vector, or none: every numeric column."""

    columns: list[str] | None = None
    pattern: str | None = None  # a regular expression matched against whole column names
    array: str | None = None  # one array<float|double> column
    vector: str | None = None  # one Spark ML Vector column (Spark path)
    exclude: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        set_ = [k for k in ("columns", "pattern", "array", "vector") if getattr(self, k)]
        if len(set_) > 1:
            raise ConfigError(f"select.features: set only one of {', '.join(set_)}")
        return set_[0] if set_ else "numeric"


@dataclass
class InputConfig:
    """Per-channel inputs (``paths``), or one input split by ``split`` fractions and ``seed``."""

    paths: dict[str, list[str]] = field(default_factory=dict)
    path: list[str] | None = None
    split: dict[str, float] = field(default_factory=dict)
    seed: int = 42
    filter: str | None = None  # a Spark SQL predicate


@dataclass
class SelectConfig:
    label: str | None = "target"  # a Spark SQL expression; None for unlabelled data
    features: FeatureSpec = field(default_factory=FeatureSpec)
    invalid: str = "error"  # nulls / NaN / inf in features: error | drop | zero


@dataclass
class OutputConfig:
    path: str = "out/shards"
    mode: str = "error"  # error | overwrite
    encoding: str = "auto"  # dense | sparse | auto
    max_shard_mb: int = 128
    shards: int | None = None  # an exact count per channel
    lease_timeout_s: float = 600.0  # a lease not renewed for this long is stale
    take_over_lease: bool = False  # --force: take over another run's lease even if fresh


@dataclass
class ReadConfig:
    path: str = "auto"  # auto | direct | spark
    batch_rows: int = 8192


@dataclass
class SparkConfig:
    master: str | None = "local[2]"  # None on a cluster: spark-submit decides
    app_name: str = "sagemaker-shards"
    conf: dict[str, str] = field(default_factory=dict)


@dataclass
class SageMakerConfig:
    region: str | None = None
    role_arn: str | None = None
    image_uri: str | None = None
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = 1
    volume_size_gb: int = 30
    volume_kms_key_id: str | None = None
    max_runtime_seconds: int = 86400
    max_wait_seconds: int | None = None
    output_path: str | None = None
    output_kms_key_id: str | None = None
    job_name_prefix: str = "linear-learner"
    input_mode: str = "File"  # File | Pipe | FastFile
    channel_input_modes: dict[str, str] = field(default_factory=dict)
    data_type: str = "ManifestFile"  # ManifestFile | S3Prefix
    shuffle_seed: int | None = None
    tags: dict[str, str] = field(default_factory=dict)
    subnets: list[str] = field(default_factory=list)
    security_group_ids: list[str] = field(default_factory=list)
    network_isolation: bool = False
    inter_container_encryption: bool = False
    spot: bool = False
    checkpoint_s3_uri: str | None = None
    max_retry_attempts: int | None = None
    endpoint_url: str | None = None  # a SageMaker-compatible endpoint (tests)
    logs_endpoint_url: str | None = None
    poll_seconds: float = 30.0


@dataclass
class LocalTrainerConfig:
    model_dir: str | None = None  # default: <output.path>/model


@dataclass
class TrainingConfig:
    backend: str = "local"  # local | sagemaker | none
    predictor_type: str = "binary_classifier"
    num_classes: int | None = None
    hyperparameters: dict[str, typing.Any] = field(default_factory=dict)
    sagemaker: SageMakerConfig = field(default_factory=SageMakerConfig)
    local: LocalTrainerConfig = field(default_factory=LocalTrainerConfig)


@dataclass
class EmrConfig:
    """Where `emr-step` puts the packaged artifacts and how it submits the step."""

    artifacts_uri: str | None = None  # s3:// prefix for env.tar.gz, main.py and the config
    step_name: str = "sagemaker-shards"
    action_on_failure: str = "CONTINUE"  # CONTINUE | CANCEL_AND_WAIT | TERMINATE_CLUSTER
    command: str = "run"  # run | convert
    deploy_mode: str = "cluster"
    spark_submit_args: list[str] = field(default_factory=list)
    region: str | None = None
    endpoint_url: str | None = None  # an EMR-compatible endpoint (tests)
    poll_seconds: float = 30.0


@dataclass
class JobConfig:
    input: InputConfig = field(default_factory=InputConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    read: ReadConfig = field(default_factory=ReadConfig)
    s3: S3Settings = field(default_factory=S3Settings)
    spark: SparkConfig = field(default_factory=SparkConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    emr: EmrConfig = field(default_factory=EmrConfig)

    def channels(self) -> dict[str, list[str]]:
        """Channel → input paths; a split input maps every channel to the same paths."""
        if self.input.split:
            return {c: list(self.input.path or []) for c in self.input.split}
        return dict(self.input.paths)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class _Plain:
    """A plain YAML scalar that YAML read as a bool or number, with the text as written: a
    string setting keeps the text (``label: no`` is the column "no", ``path: 0755`` the path
    "0755"), any other setting takes the value."""

    value: object
    text: str


class _Loader(yaml.SafeLoader):
    """YAML without the timestamp type (dates stay text); plain bools and numbers as _Plain."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag in ("bool", "int", "float"):
    _base = yaml.SafeLoader.yaml_constructors[f"tag:yaml.org,2002:{_tag}"]

    def _construct(loader, node, base=_base):
        if re.fullmatch(r"[-+]?0[0-9_]+", node.value):  # YAML 1.1 octal: 012 is read as 12
            value = int(node.value.replace("_", ""), 10)
        else:
            value = base(loader, node)
        return _Plain(value, node.value) if node.style is None else value

    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _construct)


def _yaml(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _values(value):
    """The plain values of a parsed tree (for untyped settings such as hyperparameters)."""
    if isinstance(value, _Plain):
        return value.value
    if isinstance(value, dict):
        return {_values(k): _values(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_values(v) for v in value]
    return value


_CHOICES = {
    "select.invalid": ("error", "drop", "zero"),
    "output.mode": ("error", "overwrite"),
    "output.encoding": ("dense", "sparse", "auto"),
    "read.path": ("auto", "direct", "spark"),
    "s3.retry_mode": ("standard", "adaptive", "legacy"),
    "s3.sse": (None, "AES256", "aws:kms"),
    "training.backend": ("local", "sagemaker", "none"),
    "training.predictor_type": PREDICTOR_TYPES,
    "training.sagemaker.input_mode": ("File", "Pipe", "FastFile"),
    "training.sagemaker.data_type": ("ManifestFile", "S3Prefix"),
    "emr.action_on_failure": (
        "CONTINUE",
        "CANCEL_AND_WAIT",
        "TERMINATE_CLUSTER",
        "TERMINATE_JOB_FLOW",
    ),
    "emr.command": ("run", "convert", "train"),
    "emr.deploy_mode": ("cluster", "client"),
}


def _build(cls, data, where: str):
    """A dataclass instance from a mapping, rejecting unknown keys and wrong types by name."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        got = _values(data)
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {got!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        key = _values(key)
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = (
                f" (did you mean {'.'.join([*where.split('.'), close[0]]).lstrip('.')}?)"
                if close
                else ""
            )
            raise ConfigError(
                f"unknown config key {path!r}{hint}; valid keys here: {', '.join(names)}"
            )
        kwargs[key] = _coerce(hints[key], value, path)
    obj = cls(**kwargs)
    for f in dataclasses.fields(cls):
        path = f"{where}.{f.name}" if where else f.name
        if path in _CHOICES and getattr(obj, f.name) not in _CHOICES[path]:
            allowed = " | ".join(str(c) for c in _CHOICES[path])
            raise ConfigError(f"{path} = {getattr(obj, f.name)!r}: expected one of {allowed}")
    return obj


def _coerce(hint, value, path: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _coerce(hint, value, path)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if hint is typing.Any:
        return _values(value)
    if value is None:
        if origin in (list, dict):
            return origin()  # an empty YAML key: nothing listed
        raise ConfigError(f"{path}: a value is required")
    if origin is list:
        if isinstance(value, (str, _Plain)):
            value = [value]  # one path or column is a list of one
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {_values(value)!r}")
        return [_coerce(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, _Plain):
        value = value.text if hint is str else value.value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {_values(value)!r}")
        return {
            str(_values(k)): _coerce(args[1], v, f"{path}.{_values(k)}") for k, v in value.items()
        }
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if hint is int and value != int(value):
            raise ConfigError(f"{path}: expected a whole number, got {value!r}")
        return hint(value)
    if hint is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{path}: expected a string, got {_values(value)!r}")
        return str(value)
    return value


# mappings whose own keys contain dots (Spark settings): the rest of the path is one key
_DOTTED_KEYS = ("spark.conf.",)


def _set(tree: dict, dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    for prefix in _DOTTED_KEYS:
        if dotted.startswith(prefix) and len(dotted) > len(prefix):
            keys = [*prefix.rstrip(".").split("."), dotted[len(prefix) :]]
    if not all(keys):
        raise ConfigError(f"--set {dotted}={raw}: empty key segment")
    node = tree
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {dotted}: {k!r} is not a section")
        node = child
    try:
        node[keys[-1]] = _yaml(raw) if raw != "" else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"--set {dotted}={raw}: not valid YAML ({problem})") from None


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> JobConfig:
    """Read ``path`` (YAML), apply ``key.path=value`` overrides (values parsed as YAML), check."""
    tree: dict = {}
    if path is not None:
        try:
            tree = _yaml(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {path} is a directory") from None
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            line = f" (line {where.line + 1})" if where else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"config file {path} is not valid YAML{line}: {problem}") from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        _set(tree, key.strip(), raw)
    config = _build(JobConfig, tree, "")
    check(config)
    return config


def require_inputs(config: JobConfig) -> None:
    """What a conversion needs beyond :func:`check` (train and inspect need no input)."""
    if not config.channels():
        raise ConfigError(
            "input: nothing to read; set input.paths.train (and validation, test), or "
            "input.path with input.split"
        )


def check(config: JobConfig) -> None:
    """Cross-field rules the types cannot say."""
    inp = config.input
    if inp.split and inp.paths:
        raise ConfigError("input: give either paths (one per channel) or path + split, not both")
    if inp.split:
        if not inp.path:
            raise ConfigError("input.split needs input.path")
        bad = [c for c in inp.split if c not in CHANNELS]
        if bad:
            raise ConfigError(
                f"input.split: unknown channel {bad[0]!r}; channels: {', '.join(CHANNELS)}"
            )
        if any(f <= 0 for f in inp.split.values()) or abs(sum(inp.split.values()) - 1) > 1e-6:
            raise ConfigError(f"input.split fractions must be positive and sum to 1: {inp.split}")
    else:
        if inp.path:
            raise ConfigError("input.path needs input.split (or use input.paths.train)")
        bad = [c for c in inp.paths if c not in CHANNELS]
        if bad:
            raise ConfigError(
                f"input.paths: unknown channel {bad[0]!r}; channels: {', '.join(CHANNELS)}"
            )
    channels = config.channels()
    if channels and "train" not in channels:
        raise ConfigError("input: a 'train' channel is required")
    for channel, paths in channels.items():
        where = "input.path" if inp.split else f"input.paths.{channel}"
        if not paths:
            raise ConfigError(f"{where} is empty: list at least one Parquet file or folder")
        if any(not p.strip() for p in paths):
            raise ConfigError(f"{where} has an empty path")
    if not config.output.path.strip():
        raise ConfigError("output.path is empty: name a folder (local or s3://) for the run")
    if config.output.lease_timeout_s <= 0:
        raise ConfigError("output.lease_timeout_s must be positive")
    config.select.features.kind  # noqa: B018 - raises when more than one form is set
    if config.output.max_shard_mb < 1:
        raise ConfigError("output.max_shard_mb must be at least 1")
    if config.output.shards is not None and config.output.shards < 1:
        raise ConfigError("output.shards must be at least 1")
    if config.s3.part_size_mb < 5:
        raise ConfigError("s3.part_size_mb must be at least 5 (S3's minimum part size)")
    if config.s3.kms_key_id and config.s3.sse != "aws:kms":
        raise ConfigError("s3.kms_key_id needs s3.sse: aws:kms")
    if (
        config.training.predictor_type == "multiclass_classifier"
        and not config.training.num_classes
    ):
        raise ConfigError("training.num_classes is required for a multiclass_classifier")
