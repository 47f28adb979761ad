#!/bin/bash
# Alternative to the venv-pack archive: an EMR bootstrap action that installs our wheel into the
# nodes' Python 3.11 (EMR 7). Upload the wheel from dist/ next to this script, then create the
# cluster with:
#   --bootstrap-actions Path=s3://my-bucket/artifacts/emr-bootstrap.sh,Args=[s3://my-bucket/artifacts/jobs-0.1.0-py3-none-any.whl]
# and submit with PYSPARK_PYTHON=python3.11 (no --archives):
#   spark-submit --deploy-mode cluster \
#     --conf spark.yarn.appMasterEnv.PYSPARK_PYTHON=python3.11 \
#     --conf spark.executorEnv.PYSPARK_PYTHON=python3.11 \
#     --files s3://my-bucket/artifacts/emr.yaml s3://my-bucket/artifacts/main.py run --config emr.yaml
set -euo pipefail
WHEEL_URI="${1:?usage: emr-bootstrap.sh s3://.../jobs-<version>-py3-none-any.whl}"
sudo dnf install -y python3.11 python3.11-pip >/dev/null
aws s3 cp "$WHEEL_URI" /tmp/
# pyspark comes from the cluster's Spark; install only our runtime dependencies with the wheel
sudo python3.11 -m pip install --quiet numpy pyarrow boto3 pyyaml
sudo python3.11 -m pip install --quiet --no-deps /tmp/"$(basename "$WHEEL_URI")"
