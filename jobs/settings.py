"""Typed settings that travel to the executors (no secrets, no I/O): a leaf every room may use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3; travels to the executors inside each task's closure (no secrets)."""

    endpoint_url: str | None = None
    region: str | None = None
    retry_mode: str = "standard"
    max_attempts: int = 10  # in total, the first attempt included (as the AWS CLI counts)
    part_size_mb: int = 64
    sse: str | None = None  # AES256 | aws:kms
    kms_key_id: str | None = None
    expected_bucket_owner: str | None = None

    def put_args(self) -> dict:
        """Extra arguments for every call that creates an object (encryption)."""
        args = {}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
        if self.kms_key_id:
            args["SSEKMSKeyId"] = self.kms_key_id
        return args | self.owner_args()

    def owner_args(self) -> dict:
        """The bucket-owner check, passed on every S3 call when configured."""
        return (
            {"ExpectedBucketOwner": self.expected_bucket_owner}
            if self.expected_bucket_owner
            else {}
        )
