"""Parquet → SageMaker RecordIO-protobuf shards with Spark, and linear-learner training on them."""

__version__ = "0.1.0"
