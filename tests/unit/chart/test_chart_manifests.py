"""Every rendered object is valid Kubernetes: core kinds against the API schemas of Kubernetes 1.29 and
the newest release kubernetes-validate ships (strict: unknown fields are errors), prometheus-operator
kinds against the validators generated from the operator's CRD schemas, plus a structural check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
from chartlib import ALL_VENDORS, REPO_ROOT, VALUES_DIR, of_kind, only
from toolcheck import missing

KUBERNETES_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
HERE = Path(__file__).resolve().parent
MONITORING = ["--api-versions", "monitoring.coreos.com/v1"]
SCENARIOS = {
    "defaults": {"files": []},
    "everything": {"values": {**only(ALL_VENDORS,
                                     kunlun={"sriov": {"enabled": True, "defaultNumVfs": 1}},
                                     fake={"devices": [{"id": "sim-0", "model": "Sim", "memory_mb": 1024}]}),
                              "prometheusRule": {"enabled": True}, "dashboard": {"enabled": True},
                              "discovery": {"featuresDir": "/etc/kubernetes/node-feature-discovery/features.d"},
                              "updateStrategy": {"type": "OnDelete", "rollingUpdate": {"maxUnavailable": 1}}}},
    "hardened": {"values": {"exporter": {"bindPodIP": True, "webConfig": {
        "enabled": True, "config": {"tls_server_config": {"cert_file": "/etc/krakenplug/web/tls.crt",
                                                          "key_file": "/etc/krakenplug/web/tls.key"}},
        "files": {"tls.crt": "CERT", "tls.key": "KEY"}}},
        "serviceMonitor": {"tlsConfig": {"insecureSkipVerify": True}, "basicAuth": {
            "username": {"name": "scrape", "key": "user"}, "password": {"name": "scrape", "key": "password"}}}}},
    **{path.stem: {"files": [path]} for path in sorted(VALUES_DIR.glob("*.yaml"))},
}


def _rendered(render, scenario: str) -> list[dict]:
    spec = SCENARIOS[scenario]
    return render(values=spec.get("values"), files=spec.get("files", []), extra=MONITORING)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_core_objects_validate_strictly_against_the_kubernetes_schema(render, scenario, version) -> None:
    checked = 0
    for obj in _rendered(render, scenario):
        if obj["kind"] in OPERATOR_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {version}: {err.message} "
                        f"at {'.'.join(str(p) for p in err.path)}")
        checked += 1
    assert checked >= 5


@pytest.fixture(scope="session")
def crd_validator() -> Path:
    """The npm validators of the operator's CRDs (ci/get-crd-validator.sh installs them)."""
    directory = Path(os.environ.get("TOOLS_DIR", REPO_ROOT / ".tools")) / "crd-validator"
    reason = None
    if not shutil.which("node"):
        reason = "node is not installed"
    elif not (directory / "node_modules" / "@kubernetes-models" / "prometheus-operator").is_dir():
        result = subprocess.run(["bash", str(REPO_ROOT / "ci" / "get-crd-validator.sh")], capture_output=True,
                                text=True, timeout=300, check=False)
        if result.returncode != 0:
            reason = f"ci/get-crd-validator.sh failed: {result.stderr.strip()[-500:]}"
    if reason:
        message = f"cannot validate ServiceMonitor/PrometheusRule against the CRD schema: {reason}"
        missing(message)
    return directory


def _validate_crds(directory: Path, objects: list[dict]) -> list[dict]:
    result = subprocess.run(["node", str(HERE / "crd_validate.mjs"), str(directory)], input=json.dumps(objects),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_crd_validator_catches_a_bad_object(crd_validator) -> None:
    # Guards the check below against a harness that accepts anything.
    bad = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "bad"},
           "spec": {"selector": {}, "endpoints": [{"port": "metrics", "relabelings": [{"action": "drop-it"}]}]}}
    (report,) = _validate_crds(crd_validator, [bad])
    assert report["error"] and "relabelings/0/action" in report["error"]


@pytest.mark.parametrize("scenario", ["everything", "all-vendors", "nvidia-only"])
def test_operator_objects_validate_against_the_crd_schema(render, crd_validator, scenario) -> None:
    objects = [obj for obj in _rendered(render, scenario) if obj["kind"] in OPERATOR_KINDS]
    assert {obj["kind"] for obj in objects} == OPERATOR_KINDS
    for report in _validate_crds(crd_validator, objects):
        assert report["error"] is None, report


# The CRD schemas do not forbid unknown fields (the API server prunes them), so unknown keys are
# checked here against the fields of monitoring.coreos.com/v1 (prometheus-operator
# pkg/apis/monitoring/v1: servicemonitor_types.go, prometheusrule_types.go) that the chart may render.
SERVICE_MONITOR_SPEC = {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels", "podTargetLabels",
                        "sampleLimit", "attachMetadata"}
ENDPOINT = {"port", "path", "interval", "scrapeTimeout", "honorLabels", "honorTimestamps", "relabelings",
            "metricRelabelings", "scheme", "params", "filterRunning", "tlsConfig"}
RELABEL = {"action", "sourceLabels", "separator", "targetLabel", "regex", "modulus", "replacement"}
RULE_GROUP = {"name", "interval", "rules", "labels", "limit"}
RULE = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}


def test_operator_objects_use_only_fields_the_crds_define(render) -> None:
    objects = _rendered(render, "everything")
    (monitor,) = of_kind(objects, "ServiceMonitor")
    assert set(monitor["spec"]) <= SERVICE_MONITOR_SPEC
    for endpoint in monitor["spec"]["endpoints"]:
        assert set(endpoint) <= ENDPOINT
        for relabel in endpoint["relabelings"]:
            assert set(relabel) <= RELABEL
    (rule,) = of_kind(objects, "PrometheusRule")
    assert set(rule["spec"]) == {"groups"}
    for group in rule["spec"]["groups"]:
        assert set(group) <= RULE_GROUP
        for item in group["rules"]:
            assert set(item) <= RULE and isinstance(item["expr"], str)
