"""The job's typed settings: what every section of a config file may hold, and nothing else.

A leaf every room may import: no I/O, no other module of the job. Loading (YAML, ``--set``,
checks) is :mod:`jobs.config`. The settings a task needs travel to the executors inside its
closure, so nothing here is a secret: credentials come from the AWS default chain.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

from .errors import ConfigError

CHANNELS = ("train", "validation", "test")
LONG_MAX = 2**63 - 1  # a Spark or Java seed is a long
PREDICTOR_TYPES = ("binary_classifier", "multiclass_classifier", "regressor")
# S3's full-object checksums a shard may carry (S3 verifies them on upload)
CHECKSUMS = ("crc64nvme", "crc32c")


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3; travels to the executors inside each task's closure (no secrets)."""

    endpoint_url: str | None = None  # an S3-compatible endpoint (http(s)://host:port); unset: AWS
    region: str | None = None  # unset: the AWS default chain's region
    retry_mode: str = "standard"  # botocore's retry mode
    max_attempts: int = 10  # in total, the first attempt included (as the AWS CLI counts)
    part_size_mb: int = 8  # s3transfer's chunk size too; grows past 2,000 parts (storage.s3)
    parts_in_flight: int = 4  # parts of one shard uploading at once, while the task encodes
    sse: str | None = None  # AES256 | aws:kms
    kms_key_id: str | None = None  # the KMS key for sse: aws:kms (unset: the bucket's default)
    # an account id: every S3 call fails on a bucket someone else owns
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


@dataclass
class FeatureSpec:
    """Exactly one of columns / pattern / array / vector, or none: every numeric column."""

    columns: list[str] | None = None  # these columns, in this order
    pattern: str | None = None  # a regular expression matched against whole column names
    array: str | None = None  # one array<float|double> column
    vector: str | None = None  # one Spark ML Vector column (Spark path)
    # columns left out of the numeric, columns or pattern features
    exclude: list[str] = field(default_factory=list)

    @property
    def chosen_by(self) -> str:
        """Which setting chooses the features: numeric (none set), columns, pattern, array or
        vector. (What they become in a row is the plan's ``layout``: columns, array, vector.)"""
        set_ = [k for k in ("columns", "pattern", "array", "vector") if getattr(self, k)]
        if len(set_) > 1:
            raise ConfigError(f"select.features: set only one of {', '.join(set_)}")
        return set_[0] if set_ else "numeric"


@dataclass
class InputConfig:
    """Per-channel inputs (``paths``), or one input split by ``split`` fractions and ``seed``."""

    # channel → Parquet files, folders or globs (local, s3://, s3a://)
    paths: dict[str, list[str]] = field(default_factory=dict)
    path: list[str] | None = None  # one input to split into channels by input.split
    # channel → fraction of input.path's rows (they sum to 1)
    split: dict[str, float] = field(default_factory=dict)
    seed: int = 42  # the split's seed: the same seed, the same rows per channel
    filter: str | None = None  # a Spark SQL predicate


@dataclass
class SelectConfig:
    label: str | None = "target"  # a Spark SQL expression; None for unlabelled data
    features: FeatureSpec = field(default_factory=FeatureSpec)
    invalid: str = "error"  # nulls / NaN / inf in features: error | drop | zero


@dataclass
class OutputConfig:
    # the run's folder (local or s3://); {date}, {time}, {run_id} filled per run
    path: str = "out/shards"
    mode: str = "error"  # error | overwrite | resume (a retry: a committed run is kept, not redone)
    encoding: str = "auto"  # dense | sparse | auto
    max_shard_mb: int = 128  # a task starts a new shard past this size
    # each shard's full-object checksum: S3 verifies it on upload, run.json and inspect keep it
    checksum: str = "crc64nvme"  # crc64nvme | crc32c
    sha256: bool = False  # also each shard's sha256 (in run.json, checked by inspect)
    shards: int | None = None  # an exact count per channel
    shuffle: str = "none"  # none | rows: a seeded global row shuffle (a Spark shuffle)
    seed: int = 42  # for shuffle: rows
    lease_timeout_s: float = 600.0  # a lease not renewed for this long is stale
    take_over_lease: bool = False  # --force: take over another run's lease even if fresh
    # dated runs (output.path with {date}): after a run's training completes, only the N
    # newest runs of the series are kept (never the one "latest" names); None: all
    keep: int | None = None
    # set by the tool when it fills output.path's templates: the series' template and the
    # run's logical date (recorded in run.json; they find a run's siblings and order them)
    series: str | None = None
    logical_date: str | None = None  # (set by the tool, as output.series)


@dataclass
class ReadConfig:
    path: str = "auto"  # auto | direct | spark
    batch_rows: int = 8192  # rows per Arrow batch read and encoded at once
    read_ahead: int = 2  # direct path: batches a reader thread reads ahead (0: read inline)
    ranges_in_flight: int = 4  # direct path: ranged GETs of a file on the wire at once
    range_mb: int = 8  # direct path: column chunks coalesced into GETs of up to this size
    # direct-path tasks, sized as Spark's file scan sizes them (spark.sql.files.*)
    max_task_mb: int = 128  # maxPartitionBytes: the most Parquet bytes one task reads
    open_cost_mb: int = 4  # openCostInBytes: what opening one more file counts as
    # inputs of up to this many files have their footers read on the driver (while Spark
    # starts); more, by a Spark job, as Spark's mergeSchema reads them
    driver_footers: int = 1000


@dataclass
class SparkConfig:
    master: str | None = "local[2]"  # None on a cluster: spark-submit decides
    app_name: str = "sagemaker-shards"  # the Spark application's name
    # Spark settings for the session this job starts (spark.* keys)
    conf: dict[str, str] = field(default_factory=dict)
    progress_s: float = 10.0  # a progress line this often while tasks run (0: none)


@dataclass
class SageMakerConfig:
    region: str | None = None  # unset: the AWS default chain's region
    # the execution role SageMaker trains as (iam-policy: sagemaker_role)
    role_arn: str | None = None
    image_uri: str | None = None  # unset: linear-learner's image in the region
    instance_type: str = "ml.m5.xlarge"  # the training instance type
    instance_count: int = 1  # training instances
    volume_size_gb: int = 30  # each instance's EBS volume
    volume_kms_key_id: str | None = None  # KMS key for that volume
    max_runtime_seconds: int = 86400  # SageMaker stops the job after this long
    max_wait_seconds: int | None = None  # spot only: the most to wait for capacity and run
    output_path: str | None = None  # where the model goes; unset: <output.path>/training/sagemaker
    output_kms_key_id: str | None = None  # KMS key for the model artifact
    # job names are <prefix>-<run id>-<6 hex> (at most 33 characters)
    job_name_prefix: str = "linear-learner"
    input_mode: str = "File"  # File | Pipe | FastFile
    # channel → input mode, overriding input_mode
    channel_input_modes: dict[str, str] = field(default_factory=dict)
    data_type: str = "ManifestFile"  # ManifestFile | S3Prefix
    shuffle_seed: int | None = None  # SageMaker shuffles the shard list per epoch with this seed
    tags: dict[str, str] = field(default_factory=dict)  # tags on the training job
    subnets: list[str] = field(default_factory=list)  # VPC subnets (with security_group_ids)
    # VPC security groups (with subnets)
    security_group_ids: list[str] = field(default_factory=list)
    network_isolation: bool = False  # the container gets no network
    inter_container_encryption: bool = False  # encrypt traffic between training instances
    spot: bool = False  # managed spot training (set max_wait_seconds)
    checkpoint_s3_uri: str | None = None  # checkpoints for spot training
    max_retry_attempts: int | None = None  # SageMaker's own retries of an internal failure (1-30)
    endpoint_url: str | None = None  # a SageMaker-compatible endpoint (tests)
    logs_endpoint_url: str | None = None  # a CloudWatch Logs-compatible endpoint (tests)
    poll_seconds: float = 30.0  # how often a waiting command asks for the job's status


@dataclass
class LocalTrainerConfig:
    model_dir: str | None = None  # default: <output.path>/model


@dataclass
class TrainingConfig:
    backend: str = "local"  # local | sagemaker | none
    predictor_type: str = "binary_classifier"  # linear-learner's predictor_type
    num_classes: int | None = None  # required for a multiclass_classifier
    # linear-learner hyperparameters, checked by name and type
    hyperparameters: dict[str, typing.Any] = field(default_factory=dict)
    sagemaker: SageMakerConfig = field(default_factory=SageMakerConfig)
    local: LocalTrainerConfig = field(default_factory=LocalTrainerConfig)


@dataclass
class EmrConfig:
    """Where `emr-step` puts the packaged artifacts and how it submits the step."""

    artifacts_uri: str | None = None  # s3:// prefix for jobs.pex, main.py and resolved configs
    step_name: str = "sagemaker-shards"  # the EMR step's name
    action_on_failure: str = "CONTINUE"  # CONTINUE | CANCEL_AND_WAIT | TERMINATE_CLUSTER
    command: str = "run"  # run | convert
    deploy_mode: str = "cluster"  # spark-submit --deploy-mode
    # more spark-submit arguments, e.g. [--conf, spark.executor.memory=4g]
    spark_submit_args: list[str] = field(default_factory=list)
    region: str | None = None  # the cluster's region; unset: the AWS default chain's
    # where a node's containers unpack jobs.pex: once per node, not once per container
    pex_root: str = "/tmp/sagemaker-shards-pex"
    # the cluster's LogUri (s3://…/): the submitter's policy may then read it, and `emr-step
    # --wait` shows a failed step's own error line from the driver's log there
    log_uri: str | None = None
    endpoint_url: str | None = None  # an EMR-compatible endpoint (tests)
    poll_seconds: float = 30.0  # how often emr-step --wait asks for the step's status


@dataclass
class ScheduleConfig:
    """`schedule`: the Step Functions state machine that runs the job daily, and the
    EventBridge Scheduler schedule that starts it (`--eventbridge`)."""

    name: str = "sagemaker-shards"  # the state machine's and the schedule's name
    expression: str = "cron(0 3 * * ? *)"  # EventBridge Scheduler: every day at 03:00
    timezone: str = "UTC"  # the schedule expression's time zone
    role_arn: str | None = None  # the state machine's role (iam-policy: state_machine)
    scheduler_role_arn: str | None = None  # the role EventBridge Scheduler starts it as
    convert_retries: int = 1  # the conversion step again after a failure (idempotent)


@dataclass(frozen=True)
class Range:
    """The values a numeric setting may take: at least ``low`` (above it when ``above``: a
    positive duration), at most ``high``; ``why`` says what the bound is, in the message."""

    low: float | None = None
    high: float | None = None
    above: bool = False
    why: str = ""


# Every numeric setting outside training.sagemaker, checked by jobs.config before anything
# runs (a test keeps this complete). training.sagemaker's numbers go into CreateTrainingJob and
# are checked against botocore's service model before any work (training.sagemaker.preflight).
RANGES = {
    "input.seed": Range(0, LONG_MAX),
    "output.max_shard_mb": Range(1, 512 * 1024, why="a shard of at most 512 GB"),
    "output.shards": Range(1, 1_000_000),
    "output.seed": Range(0, LONG_MAX),
    "output.lease_timeout_s": Range(0, above=True),
    "output.keep": Range(1, why="or null: keep every run"),
    "read.batch_rows": Range(1, 2**31 - 1, why="rows per Arrow batch"),
    "read.read_ahead": Range(0, 64, why="0: no reader thread"),
    "read.ranges_in_flight": Range(1, 64, why="1: one GET at a time"),
    "read.range_mb": Range(1, 5 * 1024),
    "read.max_task_mb": Range(1),
    "read.open_cost_mb": Range(0),
    "read.driver_footers": Range(0, why="0: always a Spark job"),
    "s3.max_attempts": Range(1, 100, why="the first attempt included"),
    "s3.part_size_mb": Range(5, 5120, why="S3's parts are 5 MB to 5 GB"),
    "s3.parts_in_flight": Range(1, 64, why="1: one part at a time"),
    "spark.progress_s": Range(0, why="0 turns progress lines off"),
    "training.num_classes": Range(3, 1_000_000, why="linear-learner's multiclass range"),
    "training.sagemaker.poll_seconds": Range(0, why="0: ask again at once"),
    "training.sagemaker.shuffle_seed": Range(0, LONG_MAX),
    "emr.poll_seconds": Range(0, why="0: ask again at once"),
    "schedule.convert_retries": Range(0, 10),
}


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
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def channels(self) -> dict[str, list[str]]:
        """Channel → input paths; a split input maps every channel to the same paths."""
        if self.input.split:
            return {c: list(self.input.path or []) for c in self.input.split}
        return dict(self.input.paths)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
