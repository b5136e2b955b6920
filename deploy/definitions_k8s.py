"""arhn's code location on Kubernetes: the project's definitions, each step run as its own
Kubernetes Job by `k8s_job_executor` (deploy/helm/values.yaml loads this file).

The executor reads each step's `dagster-k8s/config` op tag, so the GPU steps (pool `gpu`, see
arhn_assets/execution.py) get a pod that requests `nvidia.com/gpu` on a GPU node; they run on the
GPU image named by ARHN_GPU_IMAGE (deploy/Dockerfile.gpu), every other step on the code location's
own CPU image. Here rather than in a run config, so that runs launched by sensors and
automation place their steps the same way as runs launched by hand.
"""

import os
from typing import Any

import dagster as dg
from dagster_k8s import k8s_job_executor

import arhn_assets.definitions as project
from arhn_assets.execution import GPU_POOL


def gpu_step_images(definitions: dg.Definitions, gpu_image: str) -> dict[str, dict[str, Any]]:
    """`per_step_k8s_config` of the executor: the GPU image for every op in the `gpu` pool."""
    gpu_ops = sorted(
        assets_def.op.name
        for assets_def in definitions.resolve_asset_graph().assets_defs
        if assets_def.is_executable and assets_def.op.pool == GPU_POOL
    )
    return {op_name: {"container_config": {"image": gpu_image}} for op_name in gpu_ops}


@dg.definitions
def defs() -> dg.Definitions:
    gpu_image = os.environ.get("ARHN_GPU_IMAGE", "").strip()
    if not gpu_image:
        raise ValueError(
            "ARHN_GPU_IMAGE must name the GPU image (deploy/Dockerfile.gpu) that the GPU steps run on, "
            "e.g. registry.example.com/arhn-gpu:0.1.0"
        )
    project_defs = project.defs()
    executor = k8s_job_executor.configured(
        {"per_step_k8s_config": gpu_step_images(project_defs, gpu_image)}, name="k8s_gpu_aware"
    )
    return dg.Definitions.merge(project_defs, dg.Definitions(executor=executor))
