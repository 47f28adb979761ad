"""A local stand-in for SageMaker linear-learner: proves a run's shards are trainable offline.

It streams the shards back through our codec in mini-batches and fits a scikit-learn linear
model with ``partial_fit``. It is NOT SageMaker's algorithm: hyperparameters are mapped where
they correspond, metrics carry linear-learner's names so the two can be compared.
"""

from __future__ import annotations

import io
import logging
import pickle
import time

import numpy as np

from .. import codec
from ..contract import RunMetadata
from ..errors import TrainingError
from ..runinfo import RunLayout
from ..storage import Store
from .hyperparameters import for_run

log = logging.getLogger(__name__)

NOTICE = "local stand-in trainer (scikit-learn SGD), not SageMaker's linear-learner"


def _batches(store: Store, layout: RunLayout, channel: str, meta: RunMetadata, rng=None):
    """(features, labels) mini-batches of a channel, shard by shard, without holding it whole."""
    shards = [s.key for s in meta.channels[channel].shards]
    if rng is not None:
        shards = [shards[i] for i in rng.permutation(len(shards))]
    d = meta.feature_dim
    for key in shards:
        with store.open(layout.shard(channel, key)) as stream:
            for batch in codec.iter_batches(stream):
                if isinstance(batch, codec.SparseBatch):
                    from scipy.sparse import csr_matrix

                    x = csr_matrix(
                        (batch.values, batch.indices.astype(np.int64), batch.indptr),
                        shape=(len(batch), d),
                    )
                else:
                    x = batch.features
                yield x, batch.labels


def _model(hp: dict, seed: int):
    from sklearn.linear_model import SGDClassifier, SGDRegressor

    predictor = hp["predictor_type"]
    loss = hp.get("loss", "auto")
    lr = hp.get("learning_rate", "auto")
    l1 = hp.get("l1", "auto")
    wd = hp.get("wd", "auto")
    l1 = 0.0 if l1 == "auto" else l1
    wd = 0.0 if wd == "auto" else wd
    reg = {}
    if l1 or wd:
        reg = {"penalty": "elasticnet", "alpha": l1 + wd, "l1_ratio": l1 / (l1 + wd)}
    else:
        reg = {"penalty": "l2", "alpha": 1e-4}
    rate = (
        {"learning_rate": "optimal"} if lr == "auto" else {"learning_rate": "constant", "eta0": lr}
    )
    common = dict(random_state=seed, fit_intercept=hp.get("use_bias", True), **reg, **rate)
    if predictor == "regressor":
        sk_loss = {
            "auto": "squared_error",
            "squared_loss": "squared_error",
            "absolute_loss": "epsilon_insensitive",
            "huber_loss": "huber",
            "eps_insensitive_absolute_loss": "epsilon_insensitive",
            "eps_insensitive_squared_loss": "squared_epsilon_insensitive",
        }.get(loss)
        if sk_loss is None:
            raise TrainingError(
                f"the local trainer has no counterpart of loss={loss} for a regressor"
            )
        if rate["learning_rate"] == "optimal":
            rate = {"learning_rate": "invscaling", "eta0": 0.01}
            common.update(rate)
        eps = {"epsilon": 0.0} if loss == "absolute_loss" else {}
        return SGDRegressor(loss=sk_loss, **eps, **common)
    sk_loss = {
        "auto": "log_loss",
        "logistic": "log_loss",
        "softmax_loss": "log_loss",
        "hinge_loss": "hinge",
    }.get(loss)
    if sk_loss is None:
        raise TrainingError(f"the local trainer has no counterpart of loss={loss} for {predictor}")
    return SGDClassifier(loss=sk_loss, **common)


class _Scaler:
    """linear-learner's normalize_data: scale features by their spread, from a first pass."""

    def __init__(self, sparse: bool):
        from sklearn.preprocessing import StandardScaler

        self.inner = StandardScaler(with_mean=not sparse)

    def fit(self, batches):
        for x, _ in batches:
            self.inner.partial_fit(x)
        return self

    def __call__(self, x):
        return self.inner.transform(x)


def _metrics(model, hp, batches, prefix: str) -> dict[str, float]:
    from sklearn import metrics as m

    xs, ys = [], []
    probs, preds = [], []
    for x, y in batches:
        preds.append(model.predict(x))
        if hasattr(model, "predict_proba") and hp["predictor_type"] != "regressor":
            probs.append(model.predict_proba(x))
        ys.append(y)
        xs.append(len(y))
    if not ys:
        return {}
    y = np.concatenate(ys)
    pred = np.concatenate(preds)
    out = {}
    kind = hp["predictor_type"]
    if kind == "regressor":
        out["mse"] = m.mean_squared_error(y, pred)
        out["rmse"] = float(np.sqrt(out["mse"]))
        out["absolute_loss"] = m.mean_absolute_error(y, pred)
        out["objective_loss"] = out["mse"]
    elif kind == "binary_classifier":
        out["binary_classification_accuracy"] = m.accuracy_score(y, pred)
        out["precision"] = m.precision_score(y, pred, zero_division=0)
        out["recall"] = m.recall_score(y, pred, zero_division=0)
        out["binary_f_beta"] = m.fbeta_score(y, pred, beta=hp.get("f_beta", 1.0), zero_division=0)
        if probs:
            p = np.concatenate(probs)[:, 1]
            out["roc_auc_score"] = m.roc_auc_score(y, p) if len(np.unique(y)) > 1 else float("nan")
            out["objective_loss"] = m.log_loss(y, p, labels=[0, 1])
    else:
        out["multiclass_accuracy"] = m.accuracy_score(y, pred)
        out["macro_precision"] = m.precision_score(y, pred, average="macro", zero_division=0)
        out["macro_recall"] = m.recall_score(y, pred, average="macro", zero_division=0)
        if probs:
            labels = list(range(hp["num_classes"]))
            p = np.concatenate(probs)
            full = np.zeros((len(y), len(labels)))
            full[:, model.classes_.astype(int)] = p
            out["objective_loss"] = m.log_loss(y, full, labels=labels)
    return {f"{prefix}:{k}": float(v) for k, v in out.items()}


def require_scikit_learn() -> None:
    """The stand-in trainer is scikit-learn's; the cluster artifact leaves it out (SageMaker
    trains there), so say so before any data is read."""
    import importlib.util

    if importlib.util.find_spec("sklearn") is None:
        raise TrainingError(
            "training.backend: local needs scikit-learn, which this Python does not have (the "
            "cluster artifact leaves it out: the stand-in trainer is for laptops and tests); "
            "use training.backend: sagemaker or none, or `pip install scikit-learn`"
        )


def train_local(
    training, run_uri: str, store: Store, metadata: RunMetadata, progress=print
) -> dict:
    """Fit on the train channel, score validation and test; save model and metrics by the run."""
    hp = for_run(training, metadata)
    layout = RunLayout.at(run_uri)
    t0 = time.perf_counter()
    progress(f"training: {NOTICE}")

    def batches(channel, rng=None):
        return _batches(store, layout, channel, metadata, rng)

    scaler = None
    if hp.get("normalize_data", True):
        scaler = _Scaler(metadata.encoding == "sparse").fit(batches("train"))
    model, history = _fit(hp, batches, scaler, progress)
    metrics = {"train:objective_loss": history[-1]["train:objective_loss"]} if history else {}
    for channel in ("validation", "test"):
        if channel in metadata.channels:
            metrics |= _metrics(model, hp, _scaled(batches(channel), scaler), channel)
    buf = io.BytesIO()
    pickle.dump({"model": model, "scaler": scaler and scaler.inner, "hyperparameters": hp}, buf)
    model_loc = layout.result("local/model.pkl")
    store.put(model_loc, buf.getvalue())
    result = {
        "backend": "local",
        "notice": NOTICE,
        "status": "Completed",
        "hyperparameters": {k: str(v) for k, v in hp.items()},
        "metrics": metrics,
        "history": history,
        "model_artifact": model_loc.uri,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    store.put_json(layout.result("local/result.json"), result)
    return result


def _fit(hp: dict, batches, scaler, progress, seed: int = 0):
    """Epochs of mini-batch partial_fit over the shards (in a shuffled order, rows shuffled
    within each decoded batch); returns the model and the per-epoch train loss."""
    epochs = int(hp.get("epochs", 15))
    batch_size = int(hp.get("mini_batch_size", 1000))
    rng = np.random.default_rng(seed)
    model = _model(hp, seed)
    classes = None
    if hp["predictor_type"] == "binary_classifier":
        classes = np.array([0.0, 1.0])
    elif hp["predictor_type"] == "multiclass_classifier":
        classes = np.arange(hp["num_classes"], dtype=float)
    history = []
    for epoch in range(1, epochs + 1):
        seen = 0
        for x, y in batches("train", rng):
            order = rng.permutation(len(y))
            x, y = x[order], y[order]
            if scaler is not None:
                x = scaler(x)
            for i in range(0, len(y), batch_size):
                xb, yb = x[i : i + batch_size], y[i : i + batch_size]
                if classes is not None:
                    model.partial_fit(xb, yb, classes=classes)
                else:
                    model.partial_fit(xb, yb)
                seen += len(yb)
        loss = _metrics(model, hp, _scaled(batches("train"), scaler), "train")
        objective = loss.get("train:objective_loss", float("nan"))
        history.append({"epoch": epoch, "train:objective_loss": objective})
        progress(f"  epoch {epoch}/{epochs}: {seen} rows, train:objective_loss {objective:.4f}")
    return model, history


def _scaled(batches, scaler):
    for x, y in batches:
        yield (scaler(x) if scaler is not None else x), y
