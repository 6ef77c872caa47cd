"""The real tools tests/deploy runs, from ``.tools`` (``make deploy-tools``) and ``.venv``.

A missing tool fails the test that needs it, saying how to install it: these checks
are the point of the tests, so nothing here ever skips or falls back.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools"
SCHEMAS = TOOLS / "kubernetes-json-schema"
INSTALL_SCRIPT = ROOT / "tools" / "install-deploy-tools.sh"
CHARTS = ROOT / "charts"
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> Path:
    """``.tools/bin/NAME`` (or ``.venv/bin/NAME`` for Python-packaged tools); fails if absent."""
    for folder in (TOOLS / "bin", VENV_BIN):
        path = folder / name
        if os.access(path, os.X_OK):
            return path
    pytest.fail(
        f"{name} is not installed (looked in {TOOLS / 'bin'} and {VENV_BIN}): run "
        "`make deploy-tools` (Helm, kubeconform, pod-security-check, the Kubernetes schemas) "
        "or `make install` (hadolint, check-jsonschema)",
        pytrace=False,
    )


def _script_variable(name: str) -> str:
    match = re.search(rf'^{name}="?([^"\n]*)"?$', INSTALL_SCRIPT.read_text(), flags=re.MULTILINE)
    assert match, f"{INSTALL_SCRIPT} defines no {name}"
    return match.group(1)


KUBERNETES_VERSIONS: tuple[str, ...] = tuple(_script_variable("KUBERNETES_VERSIONS").split())
"""The Kubernetes versions every manifest is validated against, as the install script pins them."""


def schema_location() -> str:
    """kubeconform's -schema-location for the offline schemas; fails if they are not installed."""
    stamp = SCHEMAS / "STAMP"
    wanted = " ".join(KUBERNETES_VERSIONS)
    if not stamp.is_file() or not stamp.read_text().strip().endswith(wanted):
        pytest.fail(
            f"the Kubernetes {wanted} schemas are not in {SCHEMAS}: run `make deploy-tools`",
            pytrace=False,
        )
    return str(SCHEMAS / "{{ .NormalizedKubernetesVersion }}-local{{ .StrictSuffix }}")


def run(argv: Sequence[str | Path], *, stdin: str | None = None, timeout: float = 60) -> Any:
    """Run a tool; the completed process (check it yourself)."""
    return subprocess.run(
        [str(arg) for arg in argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=ROOT,
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that rejects a key given twice in one mapping (Kubernetes does too)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # "<<: *anchor" merges a mapping whose keys the node may override
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_all(text: str) -> list[dict[str, Any]]:
    """Every non-empty document of a YAML stream, duplicate keys rejected."""
    return [doc for doc in yaml.load_all(text, Loader=_UniqueKeyLoader) if doc]


def load(path: Path) -> dict[str, Any]:
    """One YAML file, duplicate keys rejected."""
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    assert isinstance(data, dict), path
    return data


@dataclass(frozen=True)
class Rendered:
    """What ``helm template`` printed, and its objects."""

    text: str
    objects: tuple[dict[str, Any], ...]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [
            o
            for o in self.objects
            if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)
        ]
        assert len(found) == 1, f"{kind} *{name_suffix}: {[o['metadata']['name'] for o in found]}"
        return found[0]

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)


class HelmError(AssertionError):
    """``helm`` exited non-zero; the message is its output."""


def helm(*args: str) -> str:
    """Run helm; its standard output, or :class:`HelmError` with what it printed."""
    result = run([tool("helm"), *args])
    if result.returncode != 0:
        raise HelmError(f"helm {' '.join(args)}:\n{result.stdout}{result.stderr}")
    return str(result.stdout)


@functools.cache
def _template(
    chart: str,
    values_files: tuple[str, ...],
    set_values: tuple[tuple[str, str], ...],
    kube_version: str,
    release: str,
    namespace: str,
    api_versions: tuple[str, ...] = (),
) -> Rendered:
    args = ["template", release, str(CHARTS / chart), "--namespace", namespace]
    args += ["--kube-version", kube_version]
    for api_version in api_versions:
        args += ["--api-versions", api_version]
    for values_file in values_files:
        args += ["--values", str(CHARTS / chart / values_file)]
    for key, value in set_values:
        args += ["--set-json", f"{key}={value}"]
    text = helm(*args)
    return Rendered(text, tuple(load_all(text)))


def template(
    chart: str,
    values_files: Sequence[str] = (),
    set_values: Mapping[str, Any] | None = None,
    *,
    kube_version: str = KUBERNETES_VERSIONS[-1],
    release: str = "rel",
    namespace: str = "ns",
    api_versions: Sequence[str] = (),
) -> Rendered:
    """``helm template`` of ``charts/CHART`` (values given as JSON with --set-json), as for a
    cluster that also serves ``api_versions`` (``GROUP/VERSION/KIND``)."""
    pairs = tuple((key, json.dumps(value)) for key, value in (set_values or {}).items())
    return _template(
        chart, tuple(values_files), pairs, kube_version, release, namespace, tuple(api_versions)
    )


def kubeconform(text: str, kube_version: str) -> Any:
    """Validate a manifest stream strictly, offline; the completed process (JSON output)."""
    return run(
        [
            tool("kubeconform"),
            "-strict",
            "-summary",
            "-output",
            "json",
            "-kubernetes-version",
            kube_version,
            "-schema-location",
            schema_location() + "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
            "-",
        ],
        stdin=text,
    )


def pod_security(text: str, level: str = "restricted") -> list[dict[str, Any]]:
    """The Pod Security Admission verdict for every workload in a manifest stream."""
    result = run([tool("pod-security-check"), "-level", level], stdin=text)
    assert result.returncode in (0, 1), result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def pod_spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The pod spec of a Pod or of a workload's template."""
    if obj["kind"] == "Pod":
        return dict(obj["spec"])
    return dict(obj["spec"]["template"]["spec"])


def env_of(container: Mapping[str, Any]) -> dict[str, str]:
    """A container's plain ``value`` environment variables."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def notes(
    chart: str,
    values_files: Sequence[str] = (),
    set_values: Mapping[str, Any] | None = None,
    *,
    kube_version: str = KUBERNETES_VERSIONS[-1],
    release: str = "rel",
    namespace: str = "ns",
    tmp: Path,
) -> str:
    """The chart's NOTES.txt as ``helm install`` would print it for these values.

    ``helm template`` never renders NOTES.txt and ``helm install --dry-run`` needs a
    cluster, so a copy of the chart in ``tmp`` gets one more template that renders the
    same text with ``tpl`` (same values, same helpers) into a ConfigMap.
    """
    copy = tmp / chart
    shutil.copytree(CHARTS / chart, copy)
    (copy / "files").mkdir(exist_ok=True)
    shutil.copy(copy / "templates" / "NOTES.txt", copy / "files" / "NOTES.txt.tpl")
    (copy / "templates" / "notes-rendered.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n"
        'data:\n  notes: {{ tpl (.Files.Get "files/NOTES.txt.tpl") . | toJson }}\n'
    )
    args = ["template", release, str(copy), "--namespace", namespace]
    args += ["--kube-version", kube_version, "--show-only", "templates/notes-rendered.yaml"]
    for values_file in values_files:
        args += ["--values", str(CHARTS / chart / values_file)]
    for key, value in (set_values or {}).items():
        args += ["--set-json", f"{key}={json.dumps(value)}"]
    (config_map,) = load_all(helm(*args))
    return str(config_map["data"]["notes"])
