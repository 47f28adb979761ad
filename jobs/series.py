"""The runs of one schedule: the dated runs under one parent prefix (what output.path's
template makes of it), the "latest" pointer a deployment pipeline reads, and retention
(``output.keep``). No Spark.

    <parent>/<date>/run.json ...        one run per logical date (output.path: <parent>/{date})
    <parent>/latest.json                the newest run whose training completed

Both act only after a run's training has completed, and read what they need from the run's
own run.json (its series and logical date), so ``train``, ``run``, ``attach`` and
``emr-step --wait`` update them alike.
"""

from __future__ import annotations

import json
import logging
import re
import time

from .config import TEMPLATE
from .errors import StorageError
from .runinfo import METADATA, RunLayout, load_run
from .storage import AlreadyExists, ConditionFailed, Location, Store

log = logging.getLogger(__name__)

LATEST = "latest.json"
# each scheduled execution's handoff (`schedule`: its run and training job), under the parent
HANDOFF = "_schedule"
FORMAT = "sagemaker-shards-latest/1"
_FILLS = {"date": r"\d{4}-\d{2}-\d{2}", "time": r"\d{6}", "run_id": r"\d{8}T\d{6}Z-[0-9a-f]{8}"}


def parent(series: str) -> Location:
    """The folder above a series' runs: its template up to the last ``/`` before the first
    ``{...}`` (``s3://b/shards/{date}`` → ``s3://b/shards/``)."""
    head = series[: TEMPLATE.search(series).start()]
    return Location.parse(head[: head.rfind("/") + 1])


def _run_pattern(series: str) -> re.Pattern:
    """A run's folder below the parent, as the template fills it."""
    rest = series[len(parent(series).uri.rstrip("/")) + 1 :].rstrip("/")
    parts = re.split(r"(\{(?:date|time|run_id)\})", rest)
    return re.compile("".join(_FILLS[p[1:-1]] if TEMPLATE.fullmatch(p) else re.escape(p)
                              for p in parts))  # fmt: skip


def runs(store: Store, series: str) -> list[tuple[Location, dict]]:
    """The committed runs of ``series``: folders the template fills, each with a run.json
    of this tool whose series is this one (nothing else is ours to order or remove)."""
    base, pattern = parent(series), _run_pattern(series)
    out = []
    for loc, _ in store.list(base):
        rel = loc.relative(base)
        folder, _, name = rel.rpartition("/")
        if name != METADATA or not pattern.fullmatch(folder):
            continue
        try:
            _, meta = load_run(base.join(folder).uri, store)
        except StorageError:
            continue  # not a run of this tool
        if (meta.config or {}).get("output", {}).get("series") == series:
            out.append((base.join(folder), meta.config["output"]))
    return out


def after_training(store: Store, run_uri: str, result: dict) -> None:
    """Once a run's training has completed: "latest" names it if it is the newest, and the
    series keeps its ``output.keep`` newest runs. A run of no series is left as it is."""
    if result.get("status") != "Completed":
        return
    _, meta = load_run(run_uri, store)
    output = (meta.config or {}).get("output", {})
    series = output.get("series")
    if not series:
        return
    latest = update_latest(store, series, run_uri, meta.run_id, output, result)
    if output.get("keep"):
        apply_keep(store, series, output["keep"], latest)


def update_latest(store, series, run_uri, run_id, output, result) -> str:
    """Point ``<parent>/latest.json`` at this run unless it names a newer logical date;
    a conditional write, so two runs finishing at once cannot both win with stale reads.
    Returns the run "latest" names afterwards."""
    loc = parent(series).join(LATEST)
    mine = {
        "format": FORMAT, "run": Location.parse(run_uri).uri, "run_id": run_id,
        "logical_date": output.get("logical_date"), "job_name": result.get("job_name"),
        "model_artifact": result.get("model_artifact"), "metrics": result.get("metrics", {}),
        "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    data = (json.dumps(mine, indent=2) + "\n").encode()
    for _ in range(10):
        got = store.read_versioned(loc)
        try:
            if got is None:
                store.create_exclusive(loc, data)
                break
            current = json.loads(got[0])
            if not isinstance(current, dict) or current.get("format") != FORMAT:
                raise StorageError(f"{loc.uri} is not this tool's; it is left as it is")
            if (current.get("logical_date") or "") > (mine["logical_date"] or ""):
                log.info("latest stays %s (a newer logical date than this run's)", current["run"])
                return current["run"]
            store.replace_if(loc, data, got[1])
            break
        except (AlreadyExists, ConditionFailed):
            continue  # another run moved it meanwhile: look again
    else:
        raise StorageError(f"{loc.uri} keeps changing; this run's training is recorded")
    log.info("latest: %s (%s)", mine["run"], mine["model_artifact"])
    return mine["run"]


def apply_keep(store: Store, series: str, keep: int, latest: str) -> list[str]:
    """Remove the runs of ``series`` older than its ``keep`` newest, by logical date: only
    what is provably ours, never the run "latest" names, a run being written, or a folder
    holding anything else. Returns the runs removed."""
    ordered = sorted(runs(store, series), key=lambda r: r[1].get("logical_date") or "",
                     reverse=True)  # fmt: skip
    removed = []
    for root, _ in ordered[keep:]:
        if root.uri.rstrip("/") == Location.parse(latest).uri.rstrip("/"):  # one spelling
            continue
        survey = RunLayout(root).survey(store)
        if survey.foreign or any(o.kind == "lease" for o in survey.ours):
            log.warning("output.keep: %s is kept (it holds other files, or is being written)",
                        root.uri)  # fmt: skip
            continue
        above = parent(series)
        metadata = [o.loc for o in survey.ours if o.kind == "metadata"]
        store.delete(metadata, keep_dirs=above)  # first: the rest is no run any more
        store.delete([o.loc for o in survey.ours if o.kind != "metadata"], keep_dirs=above)
        removed.append(root.uri)
        log.info("output.keep=%d: removed run %s (%d objects)", keep, root.uri, len(survey.ours))
    return removed
