"""spark-submit entry script (shipped as dist/main.py): the same CLI as `python -m jobs`.

spark-submit --files jobs.pex,job.yaml --conf spark.pyspark.python=./jobs.pex ...
    main.py run --config job.yaml
"""

import sys

from jobs.cli import main
from jobs.session import register_with_yarn


def run() -> int:
    code = main()
    if code == 0:
        register_with_yarn()  # else YARN fails a step that did its work without Spark
    return code


if __name__ == "__main__":
    sys.exit(run())
