"""The Dockerfile: hadolint and checkov clean, and its contract (user, paths, port, entrypoint) the same one the
Kubernetes and ECS manifests rely on."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from consumer.runtime.settings import ServingSettings, Settings
from tests.static.conftest import REPO, checkov, manifest, task_definition
from tests.support.requirements import require_tool

DOCKERFILE = REPO / "Dockerfile"

#: hadolint rules switched off in the Dockerfile (`# hadolint ignore=`), each with why.
HADOLINT_ACCEPTED = {
    # apt-get install without versions: Debian 12's point releases carry only security fixes, and the archive drops
    # a version once it is replaced, so pinned versions would break the build within weeks. The base image tag
    # (bookworm) fixes the release.
    "DL3008",
}


def instructions(keyword: str) -> list[str]:
    """The arguments of every ``keyword`` instruction (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line.split(None, 1)[1].strip() for line in text.splitlines() if line.upper().startswith(keyword + " ")]


def env() -> dict[str, str]:
    values: dict[str, str] = {}
    for argument in instructions("ENV"):
        values.update(pair.split("=", 1) for pair in argument.split())
    return values


def test_dockerfile_passes_hadolint_with_only_the_accepted_ignores():
    hadolint = require_tool("hadolint", "it is a dev package: run `make setup`", path=str(REPO / ".venv" / "bin"))
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    ignored = set(re.findall(r"#\s*hadolint ignore=([\w,]+)", DOCKERFILE.read_text()))
    assert {rule for rules in ignored for rule in rules.split(",")} == HADOLINT_ACCEPTED


def test_dockerfile_passes_checkov(static_tools):
    report = checkov(static_tools, "dockerfile", "--file", str(DOCKERFILE))
    failed = [(check["check_id"], check["check_name"]) for check in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 0


def test_image_runs_as_uid_10001_behind_tini_and_exposes_the_metrics_and_web_ports():
    assert instructions("USER") == ["10001:10001"]
    entrypoint = json.loads(instructions("ENTRYPOINT")[-1])
    assert entrypoint[:2] == ["/usr/bin/tini", "--"] and entrypoint[2:] == ["python", "-m", "consumer"]
    assert json.loads(instructions("CMD")[-1]) == ["run"]
    metrics_port = str(Settings.model_fields["metrics_port"].default)
    assert metrics_port == env()["METRICS_PORT"]
    assert instructions("EXPOSE") == [f"{metrics_port} {ServingSettings.model_fields['serve_port'].default}"]


def test_build_installs_the_default_lock_section_only_and_verifies_the_jars():
    build = " ".join(instructions("RUN"))
    assert "locked_requirements.py Pipfile.lock requirements.txt --section default" in build
    # From the develop section only the build tools of the project's own wheel, in a venv the image does not ship.
    assert "--section develop" not in build.replace("--section develop --only setuptools --only wheel", "")
    assert "--section tools" not in build, "training's full MLflow and pandas stay out of the image"
    assert "--require-hashes" in build
    assert "scripts/install_kclpy.sh" in build
    assert "pip wheel" in build and "--no-build-isolation" in build, "the project is installed as a wheel"


def test_build_downloads_the_locked_jars_where_the_launcher_looks_and_checks_them_again():
    build = " ".join(instructions("RUN"))
    # The same installer and lock as `make setup`; the default KCL_JAR_DIR of /opt/venv's python.
    assert "-m consumer.runtime.jarfetch --dest /opt/venv/share/kcl-jars" in build
    assert "verify_jars(default_jar_dir())" in build
    assert instructions("ARG") == ["KCL_MAVEN_REPOSITORY"], "a mirror comes as a build argument, with no default"
    assert "KCL_JAR_DIR" not in env(), "the launcher's default is where the build put them"


def stages() -> list[str]:
    """The Dockerfile's stages, each from its FROM line (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return ["FROM" + part for part in re.split(r"^FROM", text, flags=re.MULTILINE)[1:]]


def test_the_daemon_runs_on_the_runtime_the_build_links_as_make_setup_does_and_no_jre_package():
    build, runtime = stages()
    # The same script and module list as `make setup`, into the folder of JAVA_BIN's default for /opt/venv's python.
    assert "bash scripts/build_jre.sh /opt/venv/share/kcl-jre" in build
    assert "openjdk-17-jdk-headless" in build
    assert "openjdk" not in runtime and "jre" not in runtime.replace("/opt/venv/share/kcl-jre", "")
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    assert "JAVA_BIN" not in env(), "the launcher's default is where the build put it"


def test_the_build_slims_the_environment_after_pip_check():
    build = stages()[0]
    assert build.index("pip check") < build.index("scripts/slim_venv.py /opt/venv")
    assert "--no-compile" in build, "slim_venv.py byte-compiles only what the commands import"


def test_no_credentials_model_or_ca_bundle_is_copied_into_the_image():
    sources = [argument.split()[:-1] for argument in instructions("COPY") if not argument.startswith("--from")]
    copied = {source for group in sources for source in group}
    assert copied == {
        "Pipfile.lock",
        "pyproject.toml",
        "scripts/locked_requirements.py",
        "scripts/install_kclpy.sh",
        "scripts/jre-modules.txt",
        "scripts/build_jre.sh",
        "scripts/slim_venv.py",
        "record_processor.py",
        "properties/",
        "consumer/",
    }
    # The proxy's CA bundle reaches pip as a build secret, mounted for one RUN step only.
    assert "--mount=type=secret,id=pip_cert" in " ".join(instructions("RUN"))
    assert not any("cert" in value.lower() or "AWS_" in key for key, value in env().items())


def test_dockerignore_admits_only_what_the_dockerfile_copies():
    lines = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert lines[0] == "*", "deny everything first, then admit"
    admitted = {line[1:] for line in lines if line.startswith("!")}
    assert admitted == {
        "Pipfile.lock",
        "pyproject.toml",
        "scripts/locked_requirements.py",
        "scripts/install_kclpy.sh",
        "scripts/jre-modules.txt",
        "scripts/build_jre.sh",
        "scripts/slim_venv.py",
        "properties/",
        "record_processor.py",
        "consumer/",
    }
    assert "consumer/tools/" in lines, "the development tools stay out of the image"


WRITABLE = ("/tmp", "/var/lib/consumer/model", "/var/lib/consumer/prometheus")


def test_writable_paths_are_the_same_in_the_image_kubernetes_and_ecs():
    assert (env()["MODEL_CACHE_DIR"], env()["PROMETHEUS_MULTIPROC_DIR"]) == WRITABLE[1:]
    assert env()["CONSUMER_WORK_DIR"].startswith("/tmp/")

    deployment = manifest("Deployment")["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in deployment["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in deployment["containers"][0]["volumeMounts"]}
    for path in WRITABLE:
        assert "emptyDir" in volumes[mounts[path]], f"{path} must be an emptyDir"

    container = task_definition()["containerDefinitions"][0]
    assert sorted(mount["containerPath"] for mount in container["mountPoints"]) == sorted(WRITABLE)


@pytest.mark.parametrize("path", WRITABLE[1:])
def test_writable_folders_exist_in_the_image_for_any_uid(path):
    # runc gives a tmpfs the mode of the folder it covers: 1777 lets uid 10001 (or any assigned uid) write there.
    assert re.search(rf"install -d .*-m 1777 .*{re.escape(path)}", " ".join(instructions("RUN")))
