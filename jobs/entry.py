"""spark-submit entry script (shipped as dist/main.py): the same CLI as `python -m jobs`.

spark-submit --archives env.tar.gz#environment ... main.py run --config emr.yaml
"""

import sys

from jobs.cli import main

if __name__ == "__main__":
    sys.exit(main())
