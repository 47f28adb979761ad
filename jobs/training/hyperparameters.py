"""linear-learner's hyperparameters: names, types, ranges and enums, checked before any call.

The table follows the SageMaker Python SDK's LinearLearner (and sagemaker-pyspark's params);
values go on the wire as strings.
"""

from __future__ import annotations

import difflib
import logging
import math
from dataclasses import dataclass

from ..errors import TrainingError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Param:
    kind: type  # int | float | bool | str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    auto: bool = False  # accepts the string "auto"

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        what = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[
            self.kind
        ]
        if self.low is not None:
            what += f" {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            what += f" and {'<' if self.high_open else '<='} {self.high:g}"
        return what + (' or "auto"' if self.auto else "")


def _gt(kind, low, **kw):
    return Param(kind, low=low, low_open=True, **kw)


def _ge(kind, low, **kw):
    return Param(kind, low=low, **kw)


def _open01(**kw):
    return Param(float, low=0, high=1, low_open=True, high_open=True, **kw)


def _unit(**kw):  # [0, 1)
    return Param(float, low=0, high=1, high_open=True, **kw)


LINEAR_LEARNER: dict[str, Param] = {
    "predictor_type": Param(
        str, choices=("binary_classifier", "multiclass_classifier", "regressor")
    ),
    "feature_dim": _gt(int, 0, auto=True),
    "num_classes": Param(int, low=3, high=1_000_000),
    "mini_batch_size": _gt(int, 0),
    "epochs": _gt(int, 0),
    "binary_classifier_model_selection_criteria": Param(
        str,
        choices=(
            "accuracy",
            "f1",
            "f_beta",
            "precision_at_target_recall",
            "recall_at_target_precision",
            "cross_entropy_loss",
            "loss_function",
        ),  # the documentation's five and the SDK's f1 and cross_entropy_loss
    ),
    "target_recall": _open01(),
    "target_precision": _open01(),
    "positive_example_weight_mult": _gt(float, 0, choices=()),  # or auto / balanced, see below
    "use_bias": Param(bool),
    "num_models": _gt(int, 0, auto=True),
    "num_calibration_samples": _gt(int, 0, auto=True),
    "init_method": Param(str, choices=("uniform", "normal")),
    "init_scale": _gt(float, 0),
    "init_sigma": _gt(float, 0),
    "init_bias": Param(float),
    "optimizer": Param(str, choices=("auto", "sgd", "adam", "rmsprop")),
    "loss": Param(
        str,
        choices=(
            "auto",
            "logistic",
            "squared_loss",
            "absolute_loss",
            "hinge_loss",
            "eps_insensitive_squared_loss",
            "eps_insensitive_absolute_loss",
            "quantile_loss",
            "huber_loss",
            "softmax_loss",
        ),
    ),
    "wd": _ge(float, 0, auto=True),
    "l1": _ge(float, 0, auto=True),
    "momentum": _unit(auto=True),
    "learning_rate": _gt(float, 0, auto=True),
    "beta_1": _unit(auto=True),
    "beta_2": _unit(auto=True),
    "bias_lr_mult": _gt(float, 0, auto=True),
    "bias_wd_mult": _ge(float, 0, auto=True),
    "use_lr_scheduler": Param(bool),
    "lr_scheduler_step": _gt(int, 0, auto=True),
    "lr_scheduler_factor": _open01(auto=True),
    "lr_scheduler_minimum_lr": _gt(float, 0, auto=True),
    "normalize_data": Param(bool, auto=True),
    "normalize_label": Param(bool, auto=True),
    "unbias_data": Param(bool, auto=True),
    "unbias_label": Param(bool, auto=True),
    "num_point_for_scaler": _gt(int, 0),
    "margin": _gt(float, 0),
    "quantile": _open01(),
    "loss_insensitivity": _gt(float, 0),
    "huber_delta": _gt(float, 0),
    "early_stopping_patience": _gt(int, 0),
    "early_stopping_tolerance": _gt(float, 0),
    "accuracy_top_k": Param(int, low=1, high=1_000_000),
    "f_beta": _gt(float, 0),
    "balance_multiclass_weights": Param(bool),
}
_WEIGHT_WORDS = ("auto", "balanced")
# which loss each predictor type takes (linear-learner's documentation)
LOSSES = {
    "binary_classifier": ("auto", "logistic", "hinge_loss"),
    "multiclass_classifier": ("auto", "softmax_loss"),
    "regressor": (
        "auto", "squared_loss", "absolute_loss", "eps_insensitive_squared_loss",
        "eps_insensitive_absolute_loss", "quantile_loss", "huber_loss",
    ),
}  # fmt: skip
DEFAULT_MINI_BATCH_SIZE = 1000  # the SDK's default, capped by the rows per instance


def _check_one(name: str, value, param: Param):
    """The value in its Python type (or "auto"); raises TrainingError naming the rule."""
    bad = TrainingError(f"hyperparameter {name} = {value!r}: expected {param.describe()}")
    if isinstance(value, str) and value.strip().lower() == "auto" and param.auto:
        return "auto"
    if name == "positive_example_weight_mult" and str(value).lower() in _WEIGHT_WORDS:
        return str(value).lower()
    if param.choices:
        if str(value) not in param.choices:
            raise bad
        return str(value)
    if param.kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise bad
    if param.kind is str:
        return str(value)
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        raise bad from None
    if not math.isfinite(number) or (param.kind is int and number != int(number)):
        raise bad
    if param.low is not None and (number < param.low or (param.low_open and number == param.low)):
        raise bad
    if param.high is not None and (
        number > param.high or (param.high_open and number == param.high)
    ):
        raise bad
    return int(number) if param.kind is int else number


def validate(hyperparameters: dict) -> dict:
    """Checked values in their Python types; unknown names get the closest valid name."""
    out = {}
    for name, value in hyperparameters.items():
        param = LINEAR_LEARNER.get(name)
        if param is None:
            close = difflib.get_close_matches(name, LINEAR_LEARNER, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TrainingError(f"unknown linear-learner hyperparameter {name!r}{hint}")
        out[name] = _check_one(name, value, param)
    return out


def to_wire(hyperparameters: dict) -> dict[str, str]:
    """Every value as the string the API carries (booleans lower-case, like the SDK)."""
    wire = {}
    for name, value in hyperparameters.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if len(name) > 256 or len(text) > 256:
            raise TrainingError(f"hyperparameter {name}: names and values are limited to 256 chars")
        wire[name] = text
    if len(wire) > 100:
        raise TrainingError(f"{len(wire)} hyperparameters; the API takes at most 100")
    return wire


def for_config(training) -> dict:
    """What can be checked before any data exists: every value, the predictor type, the loss
    it takes, num_classes. Run before the conversion, so a typo costs nothing."""
    hp = validate(dict(training.hyperparameters))
    predictor = hp.setdefault("predictor_type", training.predictor_type)
    if predictor != training.predictor_type:
        raise TrainingError(
            f"hyperparameters.predictor_type {predictor!r} disagrees with "
            f"training.predictor_type {training.predictor_type!r}"
        )
    loss = hp.get("loss", "auto")
    if loss not in LOSSES[predictor]:
        raise TrainingError(
            f"hyperparameter loss = {loss!r} does not fit a {predictor}: expected one of "
            + ", ".join(LOSSES[predictor])
        )
    if predictor == "multiclass_classifier":
        k = hp.setdefault("num_classes", training.num_classes)
        if k is None:
            raise TrainingError("num_classes is required for a multiclass_classifier")
        hp["num_classes"] = _check_one("num_classes", k, LINEAR_LEARNER["num_classes"])
    return hp


def for_run(training, metadata: dict, instance_count: int = 1) -> dict:
    """The checked hyperparameters for this run: predictor type, classes and feature_dim
    agree with what the run holds; mini_batch_size fits the rows each instance gets."""
    hp = for_config(training)
    predictor = hp["predictor_type"]
    if metadata.predictor_type and metadata.predictor_type != predictor:
        raise TrainingError(
            f"the run's labels were checked for {metadata.predictor_type}, not {predictor}; "
            "convert again with this predictor_type"
        )
    d = metadata.feature_dim
    given = hp.get("feature_dim", "auto")
    if given != "auto" and given != d:
        raise TrainingError(f"hyperparameters.feature_dim = {given}, but the run's shards hold {d}")
    hp["feature_dim"] = d
    train = metadata.channels["train"]
    per_instance = train.rows // max(instance_count, 1)
    if per_instance < 1:
        raise TrainingError(
            f"the train channel has {train.rows} rows for {instance_count} instances"
        )
    if "mini_batch_size" not in hp:
        hp["mini_batch_size"] = min(DEFAULT_MINI_BATCH_SIZE, per_instance)
        log.info(
            "mini_batch_size %d (the SDK's default %d, at most the %d rows per instance)",
            hp["mini_batch_size"], DEFAULT_MINI_BATCH_SIZE, per_instance,
        )  # fmt: skip
    elif hp["mini_batch_size"] > per_instance:
        raise TrainingError(
            f"hyperparameter mini_batch_size = {hp['mini_batch_size']} is more than the "
            f"{per_instance:,} train rows per instance ({train.rows:,} rows, {instance_count} "
            "instances): the job would fail; lower it"
        )
    labels = train.labels
    if predictor == "multiclass_classifier":
        top = max((float(v) for v in labels), default=0)
        if top >= hp["num_classes"]:
            raise TrainingError(
                f"num_classes = {hp['num_classes']}, but the train channel has label {top:g}"
            )
    elif predictor == "binary_classifier":
        odd = [v for v in labels if v not in ("0", "1")]
        if odd:
            raise TrainingError(f"binary_classifier needs labels 0/1; the run has {odd[:5]}")
        if len(labels) < 2:
            raise TrainingError(
                f"the train channel holds only label {list(labels) or '(none)'}: a "
                "binary_classifier needs both 0 and 1"
            )
    if not metadata.labelled:
        raise TrainingError("the run has no labels; linear-learner trains on labelled records")
    return hp
