"""A real Kubernetes control plane for the chart tests: tools/cluster.sh (what ``make
cluster`` runs) in a folder of the test run's own, with kubectl and Helm pointed at it.

The API server, etcd, controller-manager and scheduler are the real ones (Kubernetes
1.36, built by ``make cluster-tools``); kwok plays three nodes in three zones and marks
the pods scheduled to them running. No container runs: what passes here has passed the
API server's validation and admission (Pod Security included), the scheduler and the
controllers, and Helm's hooks; nothing about the images, probes or network.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.engine import ROOT

BIN = ROOT / ".tools" / "bin"
CERT_MANAGER_CRDS = ROOT / ".tools" / "cert-manager" / "crds"
PROMETHEUS_OPERATOR_CRDS = ROOT / ".tools" / "prometheus-operator" / "crds"
RESTRICTED = {
    f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")
}


def require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make cluster-tools`", pytrace=False)
    return path


@dataclass(frozen=True)
class Cluster:
    directory: Path

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    def script(self, command: str, **env: str) -> subprocess.CompletedProcess[str]:
        """``tools/cluster.sh up|down`` (``make cluster``/``cluster-down``) for this cluster."""
        return subprocess.run(
            ["bash", "tools/cluster.sh", command],
            cwd=ROOT,
            env={**os.environ, "CLUSTER_DIR": str(self.directory), **env},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    def run(
        self, tool: str, args: Sequence[str], *, stdin: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(require(BIN / tool)), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=ROOT,
        )

    def kubectl(
        self, *args: str, stdin: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", args, stdin=stdin, timeout=timeout)

    def helm(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return self.run("helm", args, timeout=timeout)

    def ok(self, result: subprocess.CompletedProcess[str]) -> str:
        assert result.returncode == 0, f"{result.args}:\n{result.stdout}{result.stderr}"
        return result.stdout

    def get(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self.ok(self.kubectl("get", *args, "--output", "json"))))

    def namespace(self, name: str, labels: dict[str, str]) -> str:
        manifest = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        }
        self.ok(self.kubectl("apply", "--filename", "-", stdin=json.dumps(manifest)))
        # Pods need the namespace's default ServiceAccount, which the controller-manager makes.
        self.ok(
            self.kubectl(
                "wait", "--namespace", name, "--for=create", "serviceaccount/default",
                "--timeout=60s",
            )
        )  # fmt: skip
        return name

    def processes(self) -> list[int]:
        """The ids of processes whose command line names this cluster's folder."""
        found = []
        for proc in Path("/proc").iterdir():
            try:
                argv = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if proc.name.isdigit() and str(self.directory).encode() in argv:
                found.append(int(proc.name))
        return found
