"""python -m bench [codec e2e ...]: print each benchmark's table of ratios."""

import argparse
import os

from bench import codec_bench, e2e_bench, layout_bench, ml_bench, s3_bench, scale_bench

SUITES = {
    "codec": codec_bench.run,
    "e2e": lambda: list(e2e_bench.run().items()),
    "ml": ml_bench.run,
    "layout": layout_bench.run,
    "s3": s3_bench.run,
    "scale": scale_bench.run,
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("suites", nargs="*", metavar="SUITE", help=f"any of {', '.join(SUITES)}")
    args = parser.parse_args()
    unknown = set(args.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suite(s) {sorted(unknown)}; choose from {', '.join(SUITES)}")
    summary = []
    # the s3 suite's moto accepts any credentials; they must be in the environment before the
    # first Spark session starts (its Python workers inherit the JVM's environment)
    for key, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():  # fmt: skip
        os.environ.setdefault(key, value)
    # in SUITES order: e2e's and ml's session must be the process's first (the JVM writer's jars
    # load only with the first SparkContext); ml stops it
    chosen = [s for s in SUITES if s in (args.suites or SUITES)]
    for name in chosen:
        summary += SUITES[name]()
        if name == "e2e" and "ml" not in chosen:  # ml would have reused and stopped it
            e2e_bench.session().stop()
    print("\nSummary (ours / reference, same run):")
    for label, ratio in summary:
        print(f"  {label:<40} {ratio:8.2f}x")


if __name__ == "__main__":
    main()
