"""arhn's code location on Kubernetes: the project's definitions, each step run as its own
Kubernetes Job by `k8s_job_executor` (deploy/helm/values.yaml loads this file).

The executor reads each step's `dagster-k8s/config` op tag, so the GPU steps (pool `gpu`, see
arhn_assets/execution.py) get a pod that requests `nvidia.com/gpu` on a GPU node; they run on the
GPU image named by ARHN_GPU_IMAGE (deploy/Dockerfile.gpu), every other step on the code location's
own CPU image. Here rather than in a run config, so that runs launched by sensors and
automation place their steps the same way as runs launched by hand.

With ARHN_RAY_ADDRESS set (the Ray cluster of deploy/ray-cluster.yaml), the LLM steps (the ops that
use the `language_model` resource) only drive that cluster, whose workers hold the GPUs: their pods
keep the GPU image, whose Ray and Python the Ray Client connection needs, but request no GPU and
stay off the GPU nodes. The other GPU steps (training) are placed as before.
"""

import os
from typing import Any

import dagster as dg
from dagster_k8s import k8s_job_executor

import arhn_assets.definitions as project
from arhn_assets.execution import GPU_POOL

LLM_RESOURCE = "language_model"
# A step that drives a Ray cluster: the GPU image without the GPU placement of its op tags. SHALLOW
# merging replaces those keys of the `dagster-k8s/config` tag instead of adding to them.
WITHOUT_GPU = {
    "container_config": {"resources": {}},
    "pod_spec_config": {"tolerations": [], "node_selector": {}},
    "merge_behavior": "SHALLOW",
}


def gpu_step_images(definitions: dg.Definitions, gpu_image: str, ray_address: str = "") -> dict[str, dict[str, Any]]:
    """`per_step_k8s_config` of the executor: the GPU image for every op in the `gpu` pool, and
    with a Ray address, no GPU for the LLM steps (they drive the Ray cluster's GPUs)."""
    gpu_assets = [
        assets_def
        for assets_def in definitions.resolve_asset_graph().assets_defs
        if assets_def.is_executable and assets_def.op.pool == GPU_POOL
    ]
    config = {}
    for assets_def in sorted(gpu_assets, key=lambda a: a.op.name):
        step = {"container_config": {"image": gpu_image}}
        if ray_address and LLM_RESOURCE in assets_def.required_resource_keys:
            step = {**WITHOUT_GPU, "container_config": {**WITHOUT_GPU["container_config"], "image": gpu_image}}
        config[assets_def.op.name] = step
    return config


@dg.definitions
def defs() -> dg.Definitions:
    gpu_image = os.environ.get("ARHN_GPU_IMAGE", "").strip()
    if not gpu_image:
        raise ValueError(
            "ARHN_GPU_IMAGE must name the GPU image (deploy/Dockerfile.gpu) that the GPU steps run on, "
            "e.g. registry.example.com/arhn-gpu:0.1.0"
        )
    project_defs = project.defs()
    ray_address = os.environ.get("ARHN_RAY_ADDRESS", "").strip()
    executor = k8s_job_executor.configured(
        {"per_step_k8s_config": gpu_step_images(project_defs, gpu_image, ray_address)}, name="k8s_gpu_aware"
    )
    return dg.Definitions.merge(project_defs, dg.Definitions(executor=executor))
