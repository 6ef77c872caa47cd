"""The Helm in .tools/bin is built as Helm's release is: it reports its own version, and
without --kube-version it assumes the Kubernetes of its client libraries, which the
charts' kubeVersion admits (a plain `go install` says v3.21 and assumes Kubernetes 1.20)."""

from __future__ import annotations

import re

from tests.deploy.tools import CHARTS, INSTALL_SCRIPT, run, tool


def test_helm_reports_the_pinned_release() -> None:
    pinned = re.search(r"^HELM_VERSION=(\S+)$", INSTALL_SCRIPT.read_text(), flags=re.MULTILINE)
    assert pinned
    result = run([tool("helm"), "version", "--template", "{{.Version}} {{.GitTreeState}}"])
    assert result.stdout == f"{pinned.group(1)} clean", result.stderr


def test_helm_template_without_kube_version_passes_the_charts_kube_version() -> None:
    for chart in ("relay", "bunny"):
        result = run([tool("helm"), "template", "rel", CHARTS / chart])
        assert result.returncode == 0, result.stderr
        assert "kind: Deployment" in result.stdout
