"""Where the GPU steps run: the `gpu` pool and the op tags executors read.

The LLM and training assets carry `pool="gpu"` (a local instance limits it to one step, so two
LLM steps never share one GPU) and these tags, which do nothing locally and route the step on
bigger deployments:
- `dagster-k8s/config`: read by `k8s_job_executor` and `K8sRunLauncher`; requests
  `nvidia.com/gpu` and places the pod on GPU nodes;
- `dagster-celery/queue`: read by the Celery executors; a GPU worker listens on that queue.

The cluster-specific parts are settings read when the code location loads, so one image serves
every cluster:
- `ARHN_GPU_COUNT` (default 1): GPUs per step;
- `ARHN_GPU_NODE_SELECTOR`: a JSON object, e.g. `{"nvidia.com/gpu.present": "true"}`;
- `ARHN_GPU_TOLERATIONS`: a JSON list of Kubernetes tolerations (default: tolerate the usual
  `nvidia.com/gpu` taint);
- `ARHN_GPU_QUEUE` (default `gpu`): the Celery queue.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

GPU_POOL = "gpu"
DEFAULT_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


class InvalidGpuSetting(ValueError):
    """An ARHN_GPU_* environment variable that is not what it must be."""


def _json_setting(env: Mapping[str, str], name: str, kind: type, default: Any) -> Any:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as error:
        raise InvalidGpuSetting(f"{name} is not valid JSON ({error.msg} at column {error.colno}): {raw!r}") from None
    if not isinstance(value, kind):
        raise InvalidGpuSetting(f"{name} must be a JSON {kind.__name__}, got {type(value).__name__}: {raw!r}")
    return value


def gpu_op_tags(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The op tags of a GPU step (see the module docstring for the settings)."""
    env = os.environ if env is None else env
    raw_count = env.get("ARHN_GPU_COUNT", "1")
    try:
        count = int(raw_count)
    except ValueError:
        count = 0
    if count < 1:
        raise InvalidGpuSetting(f"ARHN_GPU_COUNT must be a positive integer, got {raw_count!r}")
    node_selector = _json_setting(env, "ARHN_GPU_NODE_SELECTOR", dict, {})
    tolerations = _json_setting(env, "ARHN_GPU_TOLERATIONS", list, DEFAULT_TOLERATIONS)
    gpu = {"nvidia.com/gpu": str(count)}
    pod_spec: dict[str, Any] = {"tolerations": tolerations}
    if node_selector:
        pod_spec["node_selector"] = node_selector
    return {
        "dagster-k8s/config": {
            "container_config": {"resources": {"requests": gpu, "limits": gpu}},
            "pod_spec_config": pod_spec,
        },
        "dagster-celery/queue": env.get("ARHN_GPU_QUEUE") or "gpu",
    }
