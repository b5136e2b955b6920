"""Ray's vLLM engine stage with a clear error when an engine cannot start (imported only where the
vLLM processor is built, and by its GPU workers: it imports Ray's stage module, which needs torch)."""

from __future__ import annotations

from ray.llm._internal.batch.stages.vllm_engine_stage import vLLMEngineStageUDF

from arhn_assets.core.llm.ray_vllm import EngineStartError, engine_start_message, gpu_memory


class GuardedEngineUDF(vLLMEngineStageUDF):
    """`vLLMEngineStageUDF`, whose failure to start the engine (in the actor, before any request)
    raises an EngineStartError naming the model and the GPU memory it was given."""

    def __init__(self, *args, **kwargs):
        try:
            super().__init__(*args, **kwargs)
        except Exception as error:
            model, engine_kwargs = kwargs.get("model", "?"), kwargs.get("engine_kwargs") or {}
            raise EngineStartError(engine_start_message(model, engine_kwargs, error, gpu_memory())) from error
