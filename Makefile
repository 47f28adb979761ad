# One command each on a fresh machine: `make run`, `make test`. Both set up what they need first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
# sagemaker-pyspark pins pyspark==3.3.0; we run 3.5.x, so it is installed without its dependencies.
SAGEMAKER_PYSPARK := sagemaker-pyspark==1.4.5

.PHONY: setup setup-spark4 java protobuf-jar node-python test test-spark4 test-fast run bench lint docs clean lock package

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(MAKE) --no-print-directory java protobuf-jar node-python
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "Python >= 3.10 is required (found $$($(PYTHON) --version))"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps $(SAGEMAKER_PYSPARK)
	touch $(STAMP)

# Spark 3.5 needs Java 17; install a headless JRE when the machine has none (or an older one).
java:
	@v=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	if [ -z "$$v" ] || [ "$$v" -lt 17 ]; then \
	  echo "Java >= 17 not found (found: '$${v:-none}'); installing openjdk-17-jre-headless"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq openjdk-17-jre-headless; \
	else echo "Java $$v found"; fi

# The sagemaker-spark JVM writer (our byte-for-byte reference for Vector columns, and the
# writer `make bench` races) needs protobuf-java on Spark's classpath; pyspark 3.5 no longer
# ships it. Debian's libprotobuf-java (3.21) encodes the same bytes as the 2.5.0 it was built on.
PROTOBUF_JAR := /usr/share/java/protobuf.jar
protobuf-jar:
	@if [ -f $(PROTOBUF_JAR) ]; then echo "protobuf-java found ($(PROTOBUF_JAR))"; else \
	  echo "installing libprotobuf-java (the JVM reference writer needs it)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq libprotobuf-java; fi

# The packaged artifact runs on a node's own /usr/bin/python3.11 (EMR 7.1+); the package test
# plays that node with Debian's python3.11, a different build from the venv's interpreter.
node-python:
	@if [ -x /usr/bin/python3.11 ]; then echo "node python found (/usr/bin/python3.11)"; else \
	  echo "installing Debian's python3.11 (the package test's node interpreter)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq python3.11; fi

# Two pytest workers (pytest-xdist), each with its own Spark session and moto server, a test
# module to a worker (its fixtures are built once); most tests wait on processes, S3 or Spark
# more than they compute. Then the IAM test (marker last), which reads the AWS calls every
# other test recorded in the run's shared folder.
TEST_RUN_DIR := $(CURDIR)/build/test-run
XDIST := -n 2 --dist loadfile
test: setup
	$(PY) -m ruff check jobs tests bench scripts
	rm -rf $(TEST_RUN_DIR)
	JOBS_TEST_RUN_DIR=$(TEST_RUN_DIR) $(PY) -m pytest -q $(XDIST) -m "not last" --durations=15
	JOBS_TEST_RUN_DIR=$(TEST_RUN_DIR) $(PY) -m pytest -q -m last
	rm -rf $(TEST_RUN_DIR)

# The second target: every Spark-facing test on pyspark 4.0.2 (emr-spark-8.0.0's Spark, ANSI SQL
# on by default), in its own venv with the same pins otherwise. What cannot run there is skipped
# by name (marker spark35: sagemaker-pyspark's Scala 2.12 jars — S3A input, the JVM writer);
# what starts Spark but checks only our own code outside it (marker outside_spark) runs once,
# in make test.
SPARK4_VENV := .venv-spark4
SPARK4_PIN := pyspark==4.0.2
SPARK4_STAMP := $(SPARK4_VENV)/.setup-stamp
$(SPARK4_STAMP): pyproject.toml constraints.txt
	test -x $(SPARK4_VENV)/bin/python || $(PYTHON) -m venv $(SPARK4_VENV)
	sed 's/^pyspark==.*/$(SPARK4_PIN)/' constraints.txt > $(SPARK4_VENV)/constraints.txt
	$(SPARK4_VENV)/bin/pip install --quiet --upgrade pip
	$(SPARK4_VENV)/bin/pip install --quiet -c $(SPARK4_VENV)/constraints.txt -e '.[dev]'
	touch $(SPARK4_STAMP)

setup-spark4: $(SPARK4_STAMP)

# .ci/run narrows it to what Spark's version can change in our results (SQL and casts, types,
# layouts, the Arrow and Python worker protocols): SPARK4_SELECT="... and not processes" leaves
# out the slow tier (faults, signals, the packaged cluster), to keep CI under 30 minutes.
SPARK4_SELECT ?= spark and not outside_spark
test-spark4: setup $(SPARK4_STAMP)
	rm -rf $(TEST_RUN_DIR)
	JOBS_TEST_RUN_DIR=$(TEST_RUN_DIR) $(SPARK4_VENV)/bin/python -m pytest -q $(XDIST) \
	  -m "$(SPARK4_SELECT)" -p no:cacheprovider
	rm -rf $(TEST_RUN_DIR)

# The pure tier: no Spark session, no moto server, no process races (seconds, not minutes).
test-fast: setup
	$(PY) -m pytest -q -m "not spark and not aws and not processes"

# sample data (scikit-learn's digits) → Spark conversion → local trainer → summary table
run: setup
	$(PY) -m jobs sample --out data/digits
	$(PY) -m jobs run --config conf/local.yaml

# What a cluster needs, in $(DIST): jobs.pex — our wheel and every runtime dependency of both
# read paths (pandas included) — not the local stand-in trainer's scikit-learn and SciPy:
# SageMaker trains on a cluster — at constraints.txt's versions, as wheels for CPython 3.11
# on x86_64 and aarch64 with glibc 2.28 or newer (Amazon Linux 2023 has 2.34):
# scripts/complete_platform.py lists the tags such a node accepts; nothing is compiled.
# No interpreter inside: the nodes' /usr/bin/python3.11 (EMR 7.1+) runs it, and
# the cluster's Spark provides pyspark (PYTHONPATH, inherited). The target is pinned here, not
# taken from the builder's Python. Then the spark-submit entry script, the configs, and the
# runtime pins the bootstrap-action route installs.
DIST ?= dist
# name==version of every distribution inside the PEX (for the bootstrap-action route)
define PEX_PINS
import json, sys, zipfile
info = json.loads(zipfile.ZipFile(sys.argv[1]).read("PEX-INFO"))
pins = {"==".join(w.split("-")[:2]) for w in info["distributions"]}
print("\n".join(sorted(p for p in pins if not p.startswith("jobs=="))))
endef
export PEX_PINS
RUNTIME_DEPS := numpy pyarrow pandas boto3 awscrt pyyaml sqlglot regex
package: setup
	rm -rf $(DIST) && mkdir -p $(DIST)
	src=$$(mktemp -d) && cp -r jobs pyproject.toml README.md $$src/ && \
	  $(PY) -m pip wheel --quiet --no-deps -w $(DIST) $$src && rm -rf $$src
	for arch in x86_64 aarch64; do \
	  $(PY) scripts/complete_platform.py $$arch > $(DIST)/platform-$$arch.json || exit 1; done
	$(VENV)/bin/pex $(DIST)/jobs-*.whl $(RUNTIME_DEPS) --constraints constraints.txt \
	  --exclude pyspark --exclude py4j --pip-version 25.2 --no-build \
	  --complete-platform $(DIST)/platform-x86_64.json \
	  --complete-platform $(DIST)/platform-aarch64.json \
	  --python-shebang /usr/bin/python3.11 --inherit-path=fallback --no-emit-warnings \
	  --output-file $(DIST)/jobs.pex
	rm $(DIST)/platform-*.json
	$(PY) -c "$$PEX_PINS" $(DIST)/jobs.pex > $(DIST)/runtime-constraints.txt
	cp jobs/entry.py $(DIST)/main.py
	cp conf/emr.yaml conf/emr-bootstrap.sh $(DIST)/
	@ls -la $(DIST)

bench: setup
	$(PY) -m bench

docs: setup  # docs/configuration.md from jobs/settings.py
	$(PY) -c "from jobs.config import reference_page; print(reference_page(), end='')" > docs/configuration.md

lint: setup
	$(PY) -m ruff check jobs tests bench scripts
	$(PY) -m ruff format --check jobs tests bench

# Re-pin every package after changing pyproject.toml.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip && .venv-lock/bin/pip install --quiet '.[dev]'
	{ echo "# Pinned versions for 'make setup' (pip install -c constraints.txt). Regenerate with 'make lock'."; \
	  .venv-lock/bin/pip freeze --exclude-editable | grep -v '^jobs' ; echo "$(SAGEMAKER_PYSPARK)"; } > constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) $(SPARK4_VENV) build dist .bench-cache *.egg-info .pytest_cache .ruff_cache .hypothesis out data spark-warehouse
