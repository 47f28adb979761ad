"""spark-submit entry script (shipped as dist/main.py): the same CLI as `python -m jobs`.

spark-submit --files jobs.pex,job.yaml --conf spark.pyspark.python=./jobs.pex ...
    main.py run --config job.yaml
"""

import sys

from jobs.cli import main

if __name__ == "__main__":
    sys.exit(main())
