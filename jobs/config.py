"""Typed job configuration: a YAML file plus ``--set key.path=value`` overrides.

Every section is a dataclass, so an unknown key is rejected by name (with the closest valid one
suggested) before Spark starts or anything is written.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
import secrets
import types
import typing
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from .errors import ConfigError
from .settings import CHANNELS, CHECKSUMS, LONG_MAX, PREDICTOR_TYPES, RANGES, JobConfig


@dataclass(frozen=True)
class _Plain:
    """A plain YAML scalar that YAML read as a bool or number, with the text as written: a
    string setting keeps the text (``label: no`` is the column "no", ``path: 0755`` the path
    "0755"), any other setting takes the value."""

    value: object
    text: str


@dataclasses.dataclass(frozen=True)
class _Raw:
    """A ``--set`` value that is not YAML: a text setting takes it as typed (Spark SQL with
    backticks, ``a: b``), any other setting refuses it with YAML's complaint."""

    text: str
    problem: str


class _Loader(yaml.SafeLoader):
    """YAML without the timestamp type (dates stay text); plain bools and numbers as _Plain."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _mapping(loader, node, deep=False):
    """A mapping whose keys are unique: a second ``output:`` would silently replace the
    first, so it is refused, naming both lines."""
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        key = key.text if isinstance(key, _Plain) else key
        if key in seen:
            raise ConfigError(
                f"config: key {key!r} appears twice (lines {seen[key]} and "
                f"{key_node.start_mark.line + 1}); keep one"
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor("tag:yaml.org,2002:map", _mapping)

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
    "output.mode": ("error", "overwrite", "resume"),
    "output.encoding": ("dense", "sparse", "auto"),
    "output.shuffle": ("none", "rows"),
    "output.checksum": CHECKSUMS,
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
    if isinstance(value, _Raw) and origin not in (typing.Union, types.UnionType):
        if hint is str:
            return value.text
        raise ConfigError(f"--set {path}={value.text}: not valid YAML ({value.problem})")
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
        value = _yaml(raw) if raw != "" else None
        if isinstance(value, str) and "#" in raw and value != raw.strip():
            value = raw.strip()  # `--set "output.path=runs/exp #3"`: no YAML comment, as typed
        node[keys[-1]] = value
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        node[keys[-1]] = _Raw(raw, problem)  # text settings take it; others refuse it


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
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not a text (UTF-8) file") from None
        except OSError as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
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
    config = _expand_paths(_build(JobConfig, tree, ""))
    check(config)
    return config


# Settings that name a place: each gets `~` and `$VAR` expanded, as a shell would.
PATH_SETTINGS = (
    "input.paths", "input.path", "output.path", "training.local.model_dir",
    "training.sagemaker.output_path", "training.sagemaker.checkpoint_s3_uri",
    "emr.artifacts_uri", "emr.log_uri",
)  # fmt: skip
ENDPOINT_SETTINGS = (
    "s3.endpoint_url", "training.sagemaker.endpoint_url", "training.sagemaker.logs_endpoint_url",
    "emr.endpoint_url",
)  # fmt: skip
_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def _expand_paths(config: JobConfig) -> JobConfig:
    """``~/shards`` means the home folder, and ``$DATA/in`` or ``${DATA}/in`` the variable's
    value, as in a shell; not a folder named ``~`` or ``$DATA``. An unset variable is refused
    (a shell would make it empty: ``$BUCKT/in`` would read ``/in``)."""

    def expand(key: str, value):
        if isinstance(value, dict):
            return {k: expand(f"{key}.{k}", v) for k, v in value.items()}
        if isinstance(value, list):
            return [expand(key, v) for v in value]
        if not value:
            return value

        def var(m: re.Match) -> str:
            name = m.group(1) or m.group(2)
            if name not in os.environ:
                raise ConfigError(f"{key} {value!r}: ${name} is not set in the environment")
            return os.environ[name]

        value = _VAR.sub(var, value)
        return os.path.expanduser(value) if value.startswith("~") else value

    for key in PATH_SETTINGS:  # on the config just built: no one else holds it yet
        *parents, leaf = key.split(".")
        section = functools.reduce(getattr, parents, config)
        setattr(section, leaf, expand(key, getattr(section, leaf)))
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
    config.select.features.chosen_by  # noqa: B018 - raises when more than one form is set
    _check_ranges(config)
    for key in ENDPOINT_SETTINGS:
        url = functools.reduce(getattr, key.split("."), config)
        parsed = urllib.parse.urlparse(url or "")
        if url and (parsed.scheme not in ("http", "https") or not parsed.hostname):
            raise ConfigError(
                f"{key} {url!r} is not an http:// or https:// URL (e.g. http://127.0.0.1:9000)"
            )
    if config.output.keep is not None:
        if not (TEMPLATE.search(config.output.path) or config.output.series):
            raise ConfigError(
                "output.keep applies to dated runs: give output.path a {date} (e.g. "
                "s3://bucket/shards/{date}), one folder per run under one parent"
            )
    if config.s3.kms_key_id and config.s3.sse != "aws:kms":
        raise ConfigError("s3.kms_key_id needs s3.sse: aws:kms")
    if (
        config.training.predictor_type == "multiclass_classifier"
        and not config.training.num_classes
    ):
        raise ConfigError("training.num_classes is required for a multiclass_classifier")


def _check_ranges(config: JobConfig) -> None:
    for key, bound in RANGES.items():
        value = functools.reduce(getattr, key.split("."), config)
        if value is None:
            continue
        low, high = bound.low, bound.high
        if low is not None and (value <= low if bound.above else value < low):
            need = "positive" if bound.above and low == 0 else (
                f"above {low:g}" if bound.above else
                "not negative" if low == 0 else f"at least {low:g}")  # fmt: skip
        elif high is not None and value > high:
            need = f"at most {high}"
        else:
            continue
        why = f" ({bound.why})" if bound.why else ""
        raise ConfigError(f"{key} must be {need}{why}: got {value}")


TEMPLATE = re.compile(r"\{(date|time|run_id)\}")


def submission_id(now: datetime) -> str:
    """What ``{run_id}`` becomes: ``20261206T070000Z-1e198be4``."""
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"


def logical_date(text: str | None, now: datetime | None = None) -> datetime:
    """The date a run is for: the scheduler's (``--logical-date``: a date or an ISO 8601
    time, as EventBridge Scheduler, Step Functions and Airflow give it), else now; in UTC."""
    if text is None:
        return now or datetime.now(timezone.utc)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--logical-date {text!r} is not a date or an ISO 8601 time (2026-12-06 or "
            "2026-12-06T07:00:00Z); was the scheduler's placeholder left unfilled?"
        ) from None
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)


def resolve_templates(config: JobConfig, values: dict[str, str]) -> JobConfig:
    """output.path and training.sagemaker.output_path with the named templates (``date``:
    YYYY-MM-DD, ``time``: HHMMSS, ``run_id``) filled in; others are left for later, and any
    ``{...}`` that is not a template is an error."""

    def fill(name: str, text: str | None) -> str | None:
        if text is None:
            return None
        out = TEMPLATE.sub(lambda m: values.get(m.group(1), m.group(0)), text)
        left = re.search(r"\{[^}]*\}", TEMPLATE.sub("", out))
        if left:
            raise ConfigError(
                f"{name} {text!r}: unknown template {left.group(0)}; use {{date}}, {{time}} "
                "or {run_id}"
            )
        return out

    output = dataclasses.replace(config.output, path=fill("output.path", config.output.path))
    sm = config.training.sagemaker
    sm = dataclasses.replace(sm, output_path=fill("training.sagemaker.output_path", sm.output_path))
    training = dataclasses.replace(config.training, sagemaker=sm)
    return dataclasses.replace(config, output=output, training=training)


def resolve_run(config: JobConfig, when: datetime, run_id: str) -> JobConfig:
    """The config of one run for ``when``: its paths filled in and, when output.path was a
    template, the template (the run's series) and the logical date recorded beside it."""
    resolved = resolve_templates(config, dated(when, run_id))
    if resolved.output.path == config.output.path:
        return resolved
    output = dataclasses.replace(
        resolved.output, series=config.output.path, logical_date=when.isoformat()
    )
    return dataclasses.replace(resolved, output=output)


def dated(when: datetime, run_id: str | None = None) -> dict[str, str]:
    """The template values of a run for ``when`` (and ``run_id``, when it is known)."""
    values = {"date": when.strftime("%Y-%m-%d"), "time": when.strftime("%H%M%S")}
    return values | ({"run_id": run_id} if run_id else {})


def _field_notes() -> dict[tuple[str, str], str]:
    """(class name, field name) → the comment on the field's line in jobs/settings.py, with
    any comment lines right above it: the settings' documentation lives beside them."""
    import inspect
    import io
    import tokenize

    from . import settings

    notes: dict[tuple[str, str], str] = {}
    cls, above, line_of = None, [], {}
    tokens = list(tokenize.generate_tokens(io.StringIO(inspect.getsource(settings)).readline))
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.NAME and tok.string == "class" and tok.start[1] == 0:
            cls, above = tokens[i + 1].string, []
        elif tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if tok.line.strip().startswith("#"):
                above.append(text)
            elif tok.start[0] in line_of:
                notes[line_of[tok.start[0]]] = " ".join([*above, text])
                above = []
        elif (
            cls and tok.type == tokenize.NAME and tok.start[1] == 4
            and tokens[i + 1].string == ":"
        ):  # fmt: skip
            line_of[tok.start[0]] = (cls, tok.string)
            if above:
                notes[(cls, tok.string)] = " ".join(above)
            above = []
        elif tok.type == tokenize.NL and not tok.line.strip():
            above = []
    return notes


def reference_page() -> str:
    """docs/configuration.md: every config key, its default, what it takes and what it means,
    generated from the settings dataclasses and their comments."""
    notes = _field_notes()
    rows = []

    def walk(cls, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        defaults = cls()
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            args = set(typing.get_args(hints[f.name])) - {type(None)} or {hints[f.name]}
            nested = [a for a in args if dataclasses.is_dataclass(a)]
            if nested:
                walk(nested[0], key + ".")
                continue
            default = getattr(defaults, f.name)
            shown = "—" if default in (None, [], {}) else f"`{default}`"
            takes = " \\| ".join(map(str, _CHOICES.get(key, ())))
            bound = RANGES.get(key)
            if bound:
                low = "" if bound.low is None else f"{'>' if bound.above else '≥'} {bound.low:g}"
                high = "" if bound.high is None else f"≤ {bound.high:,}"
                high = "≤ 2^63 - 1" if bound.high == LONG_MAX else high
                takes = ", ".join(x for x in (low, high) if x)
            note = notes.get((cls.__name__, f.name), "")
            rows.append(f"| `{key}` | {shown} | {takes} | {note.replace('|', '/')} |")

    walk(JobConfig, "")
    head = [
        "# Configuration",
        "",
        "Every key of a config file (`--config`) or `--set key.path=value`, generated from",
        "`jobs/settings.py` by `make docs` (a test fails when this page is not current). An",
        "unknown key, a value of the wrong type, a choice not listed or a number out of its",
        "range is refused by name before anything runs. `~` and `$VAR` in paths are expanded",
        "(an unset variable is refused). `conf/local.yaml` is the embedded default and",
        "`conf/emr.yaml` a complete EMR example.",
        "",
        "| key | default | takes | meaning |",
        "|---|---|---|---|",
    ]
    return "\n".join([*head, *rows]) + "\n"
