#!/bin/bash
# Alternative to dist/jobs.pex: an EMR bootstrap action (EMR 7.1+) that installs our wheel and
# the exact runtime versions the PEX carries (dist/runtime-constraints.txt: numpy, pyarrow,
# pandas, boto3, ...) into the nodes' /usr/bin/python3.11. The nodes must reach a package index
# (PyPI, or a mirror set in /etc/pip.conf). Upload the wheel and the constraints from dist/ next
# to this script, then create the cluster with:
#   --bootstrap-actions Path=s3://my-bucket/artifacts/emr-bootstrap.sh,Args=[s3://my-bucket/artifacts/jobs-0.1.0-py3-none-any.whl,s3://my-bucket/artifacts/runtime-constraints.txt]
# and submit with the nodes' Python (no --files jobs.pex):
#   spark-submit --deploy-mode cluster \
#     --conf spark.pyspark.python=/usr/bin/python3.11 \
#     --files s3://my-bucket/artifacts/job.yaml s3://my-bucket/artifacts/main.py run --config job.yaml
set -euo pipefail
WHEEL_URI="${1:?usage: emr-bootstrap.sh s3://.../jobs-<version>-py3-none-any.whl s3://.../runtime-constraints.txt}"
PINS_URI="${2:?usage: emr-bootstrap.sh WHEEL_URI s3://.../runtime-constraints.txt}"
aws s3 cp "$WHEEL_URI" /tmp/
aws s3 cp "$PINS_URI" /tmp/runtime-constraints.txt
# pyspark comes from the cluster's Spark; everything else at the versions `make test` ran with
sudo /usr/bin/python3.11 -m ensurepip --upgrade >/dev/null 2>&1 || true
sudo /usr/bin/python3.11 -m pip install --quiet -r /tmp/runtime-constraints.txt
sudo /usr/bin/python3.11 -m pip install --quiet --no-deps /tmp/"$(basename "$WHEEL_URI")"
