"""What a conversion checks before Spark starts or anything is written: the inputs as listed,
and where the output lies relative to them. No Spark, no data read."""

from __future__ import annotations

import logging
from pathlib import Path

from .config import require_inputs
from .errors import ConfigError, StorageError
from .settings import JobConfig
from .storage import Location

log = logging.getLogger(__name__)

GLOB_CHARS = "*?[{"


def _base(uri: str) -> Location:
    """The location a (possibly globbed) input lives under: the path up to its first glob."""
    cut = min((uri.find(c) for c in GLOB_CHARS if c in uri), default=-1)
    if cut >= 0:
        uri = uri[:cut].rsplit("/", 1)[0] or "/"
    return Location.parse(uri)


def _parse(uri: str, where: str) -> Location:
    try:
        return _base(uri)
    except StorageError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def check_paths(config: JobConfig, inputs: bool = True) -> None:
    """Inputs listed once, none inside another of its channel; the output neither inside an
    input (a later run would read its shards as Parquet) nor around one (overwrite and cleanup
    work there); the output not an existing file. ``inputs`` False: the caller gives a
    DataFrame instead."""
    if inputs:
        require_inputs(config)
    out_uri = config.output.path
    output = _parse(out_uri, "output.path")
    if output.scheme == "file" and Path(output.key).is_file():
        raise ConfigError(f"output.path {out_uri} is an existing file; name a folder")
    listed: dict[Location, str] = {}
    for channel, uris in (config.channels() if inputs else {}).items():
        where = "input.path" if config.input.split else f"input.paths.{channel}"
        locs = [(uri, _parse(uri, where)) for uri in uris]
        for i, (uri, loc) in enumerate(locs):
            for other_uri, other in locs[:i]:
                if loc.resolved() == other.resolved():
                    raise ConfigError(f"{where} lists {uri} twice ({other_uri})")
                outer, inner = (other_uri, uri) if other.contains(loc) else (uri, other_uri)
                if other.contains(loc) or loc.contains(other):
                    raise ConfigError(
                        f"{where}: {inner} is inside {outer}, so its rows would be read twice"
                    )
            if output.contains(loc):
                raise ConfigError(
                    f"{where} {uri} is inside output.path {out_uri}: the output must not hold "
                    "the input (overwrite and cleanup work there); write the run elsewhere"
                )
            if loc.contains(output):
                raise ConfigError(
                    f"output.path {out_uri} is inside {where} {uri}: a later run would read "
                    "its shards as Parquet; write the run elsewhere"
                )
            if not config.input.split:
                seen = listed.setdefault(loc.resolved(), channel)
                if seen != channel:
                    log.warning(
                        "input %s is read by both channel %s and channel %s: their metrics "
                        "will not measure generalisation",
                        uri,
                        seen,
                        channel,
                    )
