"""The image: the Dockerfile read by a real parser and a real linter, and what it would
install built and run here.

No container engine runs on this machine, so the image's environment is rebuilt the way
the Dockerfile's build stage makes it: from exactly the build context .dockerignore lets
through, the wheel built from it, installed with constraints.txt into a fresh virtual
environment that has nothing else. relay and bunny then run from there, so a file left
out of the context or a dependency missing from pyproject.toml fails here.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped]

from tests.deploy.tools import ROOT, TOOLS, run, tool

pytestmark = pytest.mark.timeout(300)

DOCKERFILE = ROOT / "Dockerfile"
UID = "10001"
FINAL_STAGES = ("bunny", "relay")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [value for name, value in self.instructions if name == instruction]

    def pairs(self, instruction: str) -> dict[str, str]:
        """KEY=VALUE pairs of this stage's LABEL or ENV instructions."""
        found: dict[str, str] = {}
        for value in self.values(instruction):
            for word in shlex.split(value):
                key, _, item = word.partition("=")
                found[key] = item
        return found


def stages() -> dict[str, Stage]:
    parsed: dict[str, Stage] = {}
    current: Stage | None = None
    for item in DockerfileParser(path=str(DOCKERFILE)).structure:
        instruction, value = item["instruction"], item["value"]
        if instruction == "FROM":
            base, _, name = value.partition(" AS ")
            current = parsed.setdefault(name, Stage(name, base))
        elif current is not None and instruction != "COMMENT":
            current.instructions.append((instruction, value))
    return parsed


def default_arg(name: str) -> str:
    for item in DockerfileParser(path=str(DOCKERFILE)).structure:
        if item["instruction"] == "ARG" and item["value"].startswith(f"{name}="):
            return str(item["value"].partition("=")[2])
    raise AssertionError(f"no ARG {name}")


def test_hadolint_finds_nothing_to_complain_about() -> None:
    result = run([tool("hadolint"), "--no-color", DOCKERFILE])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_stages_build_on_one_pinned_slim_python_and_relay_is_the_default_target() -> None:
    found = stages()
    assert list(found) == ["build", "runtime", *FINAL_STAGES]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", default_arg("PYTHON_IMAGE"))
    assert found["build"].base == found["runtime"].base == "${PYTHON_IMAGE}"
    assert all(found[name].base == "runtime" for name in FINAL_STAGES)


def test_images_run_as_a_fixed_non_root_uid() -> None:
    runtime = stages()["runtime"]
    assert runtime.values("USER") == [f"{UID}:{UID}"]
    (adduser,) = [v for v in runtime.values("RUN") if "useradd" in v]
    assert f"--uid {UID}" in adduser
    assert f"--gid {UID}" in adduser
    # relay's state directory (the SQLite store) is the one place it writes: that user's.
    assert f"install --directory --owner {UID} --group {UID} --mode 0750 /var/lib/relay" in adduser
    assert all(not stages()[name].values("USER") for name in FINAL_STAGES)


def test_relay_and_bunny_are_the_entry_points() -> None:
    found = stages()
    assert found["relay"].values("ENTRYPOINT") == ['["relay"]']
    assert found["relay"].values("CMD") == ['["serve"]']
    assert found["relay"].values("EXPOSE") == ["50051"]
    (healthcheck,) = found["relay"].values("HEALTHCHECK")
    assert '"bunnyrelay.healthcheck", "127.0.0.1:50051"' in healthcheck
    assert found["bunny"].values("ENTRYPOINT") == ['["bunny"]']


def test_final_stages_get_the_environment_and_no_compiler_or_package_manager() -> None:
    found = stages()
    runtime = found["runtime"]
    assert runtime.values("COPY") == ["--from=build /opt/bunnyrelay /opt/bunnyrelay"]
    (adduser,) = runtime.values("RUN")
    assert not re.search(r"apt|apk|pip|gcc|make|build-essential", adduser)
    for name in FINAL_STAGES:
        assert {i for i, _ in found[name].instructions} <= {
            "LABEL",
            "EXPOSE",
            "HEALTHCHECK",
            "ENTRYPOINT",
            "CMD",
        }
    env = runtime.pairs("ENV")
    assert env["PATH"].startswith("/opt/bunnyrelay/bin:")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"  # nothing written to a read-only root


def test_images_carry_oci_labels() -> None:
    found = stages()
    labels = found["runtime"].pairs("LABEL")
    for key in ("title", "description", "version", "revision", "created", "licenses", "source"):
        assert labels[f"org.opencontainers.image.{key}"], key
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    for name in FINAL_STAGES:
        assert found[name].pairs("LABEL") == {"org.opencontainers.image.title": name}


# ---- the build context ------------------------------------------------------------------


def _pattern(text: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: "**" spans directories, "*" and "?"
    stay within one path element."""
    text = os.path.normpath(text.lstrip("/"))
    out = ""
    i = 0
    while i < len(text):
        if text.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif text.startswith("**", i):
            out, i = out + ".*", i + 2
        elif text[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif text[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(text[i]), i + 1
    return re.compile(out)


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keep = line.startswith("!")
            rules.append((keep, _pattern(line.removeprefix("!"))))
    return rules


def _excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parents wins."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for keep, pattern in rules:
        if any(pattern.fullmatch(prefix) for prefix in prefixes):
            excluded = not keep
    return excluded


def build_context() -> list[str]:
    """Every file `docker build .` would send, relative to the repository."""
    rules = _ignore_rules()
    kept = [pattern.pattern for keep, pattern in rules if keep]
    files = []
    for folder, dirs, names in os.walk(ROOT):
        relative = os.path.relpath(folder, ROOT)
        # Skip what is excluded and cannot hold a re-included file (.venv, .git, …).
        dirs[:] = [
            d
            for d in dirs
            if not _excluded(os.path.normpath(f"{relative}/{d}"), rules)
            or any(p.startswith(re.escape(os.path.normpath(f"{relative}/{d}"))) for p in kept)
        ]
        for name in names:
            path = os.path.normpath(f"{relative}/{name}")
            if not _excluded(path, rules):
                files.append(path)
    return sorted(files)


def test_the_build_context_is_what_the_copy_lines_need_and_nothing_else() -> None:
    context = build_context()
    sources = [
        source.rstrip("/")
        for stage in stages().values()
        for value in stage.values("COPY")
        if not value.startswith("--from")
        for source in value.split()[:-1]
    ]
    for source in sources:
        assert any(f == source or f.startswith(source + "/") for f in context), source
    tops = {f.split("/")[0] for f in context}
    assert tops == {
        "pyproject.toml",
        "constraints.txt",
        "README.md",
        "bunnyrelay",
        "bunny",
        "relay",
    }
    assert not [f for f in context if "__pycache__" in f or f.endswith(".pyc")]


# ---- the image's environment, built and run ----------------------------------------------


@dataclass
class ImageEnv:
    venv: Path
    home: Path
    state: Path

    def bin(self, name: str) -> str:
        return str(self.venv / "bin" / name)

    def env(self) -> dict[str, str]:
        """What the image's ENV gives a process, and nothing from this test run."""
        return {
            "PATH": f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "HOME": "/nonexistent",
            # The image's /var/lib/relay, where the chart and compose mount a volume.
            "RELAY_STATE_DIR": str(self.state),
        }

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            env=self.env(),
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def snapshot(self) -> dict[str, tuple[int, int]]:
        return {
            str(p): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in self.venv.rglob("*")
            if p.is_file()
        }


def _dependencies(pyproject: Path) -> list[str]:
    return list(tomllib.loads(pyproject.read_text())["project"]["dependencies"])


def _wheelhouse(requirements: Path, constraints: Path) -> Path:
    """Wheels of every runtime dependency at the pinned versions, downloaded once (from
    PyPI, as `docker build` would) into .tools/wheelhouse and reused offline after that."""
    key = hashlib.sha256(requirements.read_bytes() + constraints.read_bytes()).hexdigest()[:16]
    house = TOOLS / "wheelhouse" / key
    if not house.is_dir():
        partial = house.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:"]
        subprocess.run(
            [*pip, "--dest", str(partial), "-c", str(constraints), "-r", str(requirements)],
            check=True,
            timeout=240,
        )
        partial.rename(house)
    return house


@pytest.fixture(scope="module")
def image_env(tmp_path_factory: pytest.TempPathFactory) -> ImageEnv:
    base = tmp_path_factory.mktemp("image")
    context = base / "context"
    for relative in build_context():
        (context / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, context / relative)
    requirements = base / "requirements.txt"
    requirements.write_text("\n".join(_dependencies(context / "pyproject.toml")) + "\n")
    constraints = context / "constraints.txt"
    wheels = base / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [
            *pip,
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(context),
        ],
        check=True,
        timeout=120,
    )
    (wheel,) = wheels.glob("bunny_relay-*.whl")
    venv = base / "opt-bunnyrelay"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60
    )
    install = [*pip, "--python", str(venv / "bin" / "python"), "install", "--quiet", "--no-index"]
    house = _wheelhouse(requirements, constraints)
    subprocess.run(
        [*install, "--find-links", str(house), "-c", str(constraints), "-r", str(requirements)],
        check=True,
        timeout=180,
    )
    subprocess.run([*install, "--no-deps", str(wheel)], check=True, timeout=60)
    home, state = base / "workdir", base / "state"
    home.mkdir()
    state.mkdir()
    return ImageEnv(venv, home, state)


def test_both_entry_points_start_from_the_image_environment(image_env: ImageEnv) -> None:
    for command in ("relay", "bunny"):
        result = image_env.run(image_env.bin(command), "--help")
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: {command}")
    serve = image_env.run(image_env.bin("relay"), "serve", "--help")
    assert "--grace-period" in serve.stdout


def test_the_image_environment_holds_only_runtime_dependencies(image_env: ImageEnv) -> None:
    listed = image_env.run(
        sys.executable, "-m", "pip", "--python", image_env.bin("python"), "list", "--format", "json"
    )
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {
        "bunny-relay",
        "grpcio",
        "grpcio-health-checking",
        "aiodns",
        "tenacity",
        "rich",
    } <= names
    assert not names & {"pytest", "grpcio-tools", "mypy", "ruff", "pyyaml", "dnspython", "pyte"}


@pytest.fixture
def relay_from_image(image_env: ImageEnv) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [image_env.bin("relay"), "serve", "--listen", "127.0.0.1:0", "--grace-period", "2"],
        env=image_env.env(),
        cwd=image_env.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    stdout = process.stdout

    def forward() -> None:
        for line in stdout:
            lines.put(line)

    pump = threading.Thread(target=forward, daemon=True)
    pump.start()
    seen: list[str] = []
    try:
        while True:
            try:
                line = lines.get(timeout=20)
            except queue.Empty:
                pytest.fail("relay from the image did not start:\n" + "".join(seen))
            seen.append(line)
            listening = re.search(r"relay listening on (\S+:\d+)", line)
            if listening:
                break
        yield process, listening.group(1)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        pump.join(timeout=5)
        stdout.close()


def test_relay_from_the_image_serves_health_and_jobs_then_drains(
    image_env: ImageEnv, relay_from_image: tuple[subprocess.Popen[str], str]
) -> None:
    process, address = relay_from_image
    before = image_env.snapshot()

    health = image_env.run(image_env.bin("python"), "-m", "bunnyrelay.healthcheck", address)
    assert (health.returncode, health.stdout) == (0, f"{address} SERVING\n"), health.stderr

    job = image_env.run(
        image_env.bin("bunny"),
        "submit",
        "--target",
        address,
        "--kind",
        "echo",
        "--payload",
        "from the image",
        "--json",
    )
    assert job.returncode == 0, job.stdout + job.stderr
    (result,) = [json.loads(line) for line in job.stdout.splitlines()]
    assert (result["status"], result["output"]) == ("SUCCEEDED", "from the image")

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    # Read-only root filesystem friendly: running wrote nothing into the environment,
    # only into relay's state directory.
    assert image_env.snapshot() == before
    assert (image_env.state / "jobs.sqlite3").is_file()


def test_the_health_check_fails_when_nothing_answers(image_env: ImageEnv) -> None:
    result = image_env.run(
        image_env.bin("python"), "-m", "bunnyrelay.healthcheck", "127.0.0.1:9", "--timeout", "1"
    )
    assert result.returncode == 1
    assert "UNAVAILABLE" in result.stderr or "DEADLINE_EXCEEDED" in result.stderr
