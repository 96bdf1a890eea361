# The ride-duration consumer: `python -m consumer run` (the KCL MultiLangDaemon on a Java 17 runtime cut to its modules, plus one
# Python record processor per leased shard) behind tini, as uid 10001, on a read-only root filesystem. The same
# image runs the model's two other deployments as other commands: `serve` (the web endpoint, port 9696) and
# `score --input ... --output ...` (a month file).
#
#   docker build -t ride-duration-consumer .
#
# Behind a TLS-intercepting proxy, give pip and the jar download the proxy's CA bundle for the build only (never
# copied into a layer); a Maven mirror instead of Maven Central with a build argument:
#   docker build --secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt -t ride-duration-consumer .
#   docker build --build-arg KCL_MAVEN_REPOSITORY=<your repository URL> -t ride-duration-consumer .
#
# At run time only these paths are written (mount an emptyDir / tmpfs / volume on each; the folders are mode 1777
# like /tmp, because runc gives a tmpfs the mode of the folder it covers, and any uid may be assigned):
#   /tmp                              the daemon's rendered properties (CONSUMER_WORK_DIR), JVM and Python scratch
#   /var/lib/consumer/model           MODEL_CACHE_DIR: the prepared model, written once per pod by the launcher
#   /var/lib/consumer/prometheus      PROMETHEUS_MULTIPROC_DIR: the shard processes' metric files
# No credentials and no model are in the image: AWS credentials come from the default chain, the model from
# MODEL_URI at start-up.

# ------------------------------------------------------------------------------------------------------ build
# /opt/venv: first the daemon's Java runtime, linked with jlink from Debian's JDK 17 and its jmods with only the
# modules of scripts/jre-modules.txt (scripts/build_jre.sh, the script `make setup` runs) into /opt/venv/share/kcl-jre,
# where the launcher looks by default (JAVA_BIN); the JDK stays in this stage. Then the default (not dev) packages of
# Pipfile.lock, hash-checked, and the official amazon-kclpy from its hash-checked sdist without jars
# (scripts/install_kclpy.sh, the route `make setup` takes). Then the project itself as a wheel: the runtime, the
# pipeline and the model (.dockerignore keeps consumer/tools out of the build context), record_processor.py and
# properties/ as package data. scripts/slim_venv.py then cuts what `run`, `score` and `serve` never load (test suites,
# unused parts of pyarrow and onnxruntime, botocore's models of other AWS services, symbol tables) and byte-compiles
# only the modules the commands import. Last, the KCL jars of properties/kcl-jars.lock, downloaded from Maven
# Central (or the repository the KCL_MAVEN_REPOSITORY build argument names) and verified by SHA-256 into
# /opt/venv/share/kcl-jars, where the launcher looks by default (KCL_JAR_DIR): the same lock and installer as
# `make setup` (python -m consumer.runtime.jarfetch).
FROM python:3.11-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_PROGRESS_BAR=off
WORKDIR /build
# The JDK for jlink and binutils for strip, in this stage only (the reason for DL3008 is the runtime stage's).
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jdk-headless binutils \
 && rm -rf /var/lib/apt/lists/*
COPY scripts/jre-modules.txt scripts/build_jre.sh scripts/
RUN bash scripts/build_jre.sh /opt/venv/share/kcl-jre

COPY Pipfile.lock ./
COPY scripts/locked_requirements.py scripts/install_kclpy.sh scripts/
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && python -m venv /opt/venv \
 && python scripts/locked_requirements.py Pipfile.lock requirements.txt --section default \
 && /opt/venv/bin/python -m pip install --no-cache-dir --no-compile --require-hashes --no-deps -r requirements.txt \
 && python scripts/locked_requirements.py Pipfile.lock build.txt --section develop --only setuptools --only wheel \
 && python -m venv /build/tools \
 && /build/tools/bin/python -m pip install --no-cache-dir --require-hashes --no-deps -r build.txt \
 && bash scripts/install_kclpy.sh /opt/venv/bin/python /build/tools/bin/python

COPY pyproject.toml record_processor.py ./
COPY properties/ properties/
COPY consumer/ consumer/
COPY scripts/slim_venv.py scripts/
RUN /build/tools/bin/python -m pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir dist . \
 && /opt/venv/bin/python -m pip install --no-cache-dir --no-compile --no-deps dist/*.whl \
 && /opt/venv/bin/python -m pip check \
 && /opt/venv/bin/python -m pip uninstall --yes --quiet pip setuptools \
 && /opt/venv/bin/python scripts/slim_venv.py /opt/venv

# Empty: Maven Central. A mirror's address is given at build time only (--build-arg), never written here.
ARG KCL_MAVEN_REPOSITORY
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export SSL_CERT_FILE=/run/secrets/pip_cert; fi \
 && /opt/venv/bin/python -m consumer.runtime.jarfetch --dest /opt/venv/share/kcl-jars

# ---------------------------------------------------------------------------------------------------- runtime
# bookworm, as the build stage whose JDK 17 linked the Java runtime (Debian 13 has no openjdk-17 package), so the
# runtime finds the C library it was built against.
FROM python:3.11-slim-bookworm
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# tini as PID 1 (forwards SIGTERM to the launcher, reaps zombies); the daemon's Java runtime comes with /opt/venv.
# apt-get clean: apt's package caches (/var/cache/apt/*.bin, about 80 MB) stay out of the layer on a base without
# the upstream images' docker-clean apt configuration (such as the container test's stand-in).
# Its version comes with the base image's Debian release (bookworm): its point releases only carry security fixes,
# and pinning an exact version would break the build as soon as the archive replaces it.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 consumer \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin consumer \
 && install -d -o 10001 -g 10001 -m 1777 /var/lib/consumer/model /var/lib/consumer/prometheus

COPY --from=build /opt/venv /opt/venv
WORKDIR /tmp

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    MODEL_CACHE_DIR=/var/lib/consumer/model \
    PROMETHEUS_MULTIPROC_DIR=/var/lib/consumer/prometheus \
    CONSUMER_WORK_DIR=/tmp/consumer \
    METRICS_PORT=9404

# Check the jars in this very image against the packaged lock (the launcher checks them again at every start) and that
# the daemon's Java runtime runs here, without the JDK's packages.
RUN python -c 'from consumer.runtime.jars import default_jar_dir, verify_jars; print(verify_jars(default_jar_dir()), "KCL jars verified")' \
 && /opt/venv/share/kcl-jre/bin/java -version

USER 10001:10001
# 9404: the stream's /metrics, /healthz, /readyz (`run`); 9696: the web endpoint (`serve`, SERVE_PORT).
EXPOSE 9404 9696
# For `docker run` (Kubernetes and ECS use their own probes on the same endpoints): `run` is alive while the launcher
# answers, the daemon runs and no processor is stuck (consumer/runtime/health.py); `serve` while a worker answers.
# The check asks the stream's port first, then the web endpoint's.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request\nfor port in (os.environ.get('METRICS_PORT', '9404'), os.environ.get('SERVE_PORT', '9696')):\n    try:\n        urllib.request.urlopen('http://127.0.0.1:%s/healthz' % port, timeout=2)\n        sys.exit(0)\n    except OSError:\n        pass\nsys.exit(1)"]
ENTRYPOINT ["/usr/bin/tini", "--", "python", "-m", "consumer"]
CMD ["run"]
