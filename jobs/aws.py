"""The one place that makes boto3 sessions and clients, and checks that credentials exist.

Credentials never come from config: the default chain (environment, profile, container or
instance role) decides. Settings (endpoint, region, retries) are passed in, never read here.
"""

from __future__ import annotations

from urllib.parse import urlparse

from .errors import StorageError

S3_SCHEMES = ("s3", "s3a", "s3n")


def session(region: str | None = None):
    import boto3

    return boto3.session.Session(region_name=region)


def client(
    service: str,
    region: str | None = None,
    endpoint_url: str | None = None,
    retry_mode: str = "standard",
    max_attempts: int = 10,
    **config,
):
    """A client with botocore's standard/adaptive retries; ``max_attempts`` counts the first."""
    from botocore.config import Config

    cfg = Config(retries={"mode": retry_mode, "total_max_attempts": max_attempts}, **config)
    return session(region).client(service, endpoint_url=endpoint_url, config=cfg)


def s3_client(settings):
    """The S3 client of the job (driver and tasks alike) for ``S3Settings``."""
    return client(
        "s3",
        settings.region,
        settings.endpoint_url,
        settings.retry_mode,
        settings.max_attempts,
        s3={"addressing_style": "path"} if settings.endpoint_url else {},
    )


def has_credentials() -> bool:
    return session().get_credentials() is not None


def require_credentials(uris: list[str], what: str) -> None:
    """Fail before any call when an S3 location is involved and no credentials can be found:
    botocore would only say so mid-run."""
    s3 = [u for u in uris if urlparse(u).scheme in S3_SCHEMES]
    if s3 and not has_credentials():
        raise StorageError(
            f"no AWS credentials found for {s3[0]} ({what}): set AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with an instance or task role"
        )
