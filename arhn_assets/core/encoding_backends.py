"""Encoding backends: the encoder's transformer run by ONNX Runtime or OpenVINO instead of torch.

sentence-transformers has `backend="onnx" | "openvino"`, but it loads them through optimum-onnx
and optimum-intel, and on today's package index neither installs beside sentence-transformers 6
(optimum-onnx 0.1 pins transformers < 4.58; optimum-intel pins transformers < 5.6 and a torchvision
that breaks the CPU torch). So this module does the small part those packages do, with the
runtimes' own libraries: torch.onnx exports the model's transformer once (keyed by the model's
fingerprint) into the model cache, ONNX Runtime quantizes it to int8 when asked
(`quantize_dynamic`, per channel), and the exported graph replaces the transformer inside the
SentenceTransformer, so tokenization, prompts, pooling, normalization and batching stay
sentence-transformers' own.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from arhn_assets.core.embeddings import Backend, Quantization

EXTRAS = {"onnx": "onnx", "openvino": "openvino"}  # backend -> the arhn extra that installs it


class BackendUnavailable(ImportError):
    """The runtime a backend needs is not installed, or the model cannot be exported to it."""


def _require(backend: Backend, module: str):
    try:
        return __import__(module)
    except ImportError as error:
        raise BackendUnavailable(
            f"the {backend} encoding backend needs {module}: pip install 'arhn[{EXTRAS[backend]}]' "
            "(or choose backend: torch)"
        ) from error


def export_onnx(model, folder: Path, quantization: Quantization) -> Path:
    """The model's transformer as `folder/model[-int8].onnx`, exported on first use. The export
    is written beside its final name and renamed, so a killed export leaves no half file."""
    _require("onnx", "onnxscript")
    target = folder / ("model-int8.onnx" if quantization == "int8" else "model.onnx")
    if target.exists():
        return target
    fp32 = folder / "model.onnx"
    if not fp32.exists():
        folder.mkdir(parents=True, exist_ok=True)
        transformer = model[0]
        sample = transformer.tokenize(["an example query", "a somewhat longer example passage to export"])
        names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in sample]
        tmp = folder / f".model-{os.getpid()}.onnx"
        try:
            torch.onnx.export(
                HiddenStates(transformer.model.eval()),
                tuple(sample[k] for k in names),
                str(tmp),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamo=True,
                external_data=False,
                dynamic_axes={name: {0: "batch", 1: "sequence"} for name in [*names, "last_hidden_state"]},
            )
        except Exception as error:  # the exporter raises many kinds; the user needs to know which model failed
            tmp.unlink(missing_ok=True)
            raise BackendUnavailable(
                f"torch.onnx could not export {type(transformer.model).__name__}: {error}"
            ) from error
        os.replace(tmp, fp32)
    if quantization == "int8":
        _require("onnx", "onnxruntime")
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = folder / f".model-int8-{os.getpid()}.onnx"
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(tmp, target)
    return target


class HiddenStates(torch.nn.Module):
    """The transformer as a function of its input tensors to its last hidden state (what torch.onnx traces)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, **extra, return_dict=True
        ).last_hidden_state


class GraphModel(torch.nn.Module):
    """A stand-in for the transformer inside a SentenceTransformer: called with the tokenizer's
    tensors, it returns {'last_hidden_state': tensor} computed by ONNX Runtime or OpenVINO."""

    def __init__(self, run, config):
        super().__init__()
        self.run = run
        self.config = config

    def forward(self, input_ids, attention_mask, token_type_ids=None, **_):
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        hidden = self.run({name: value.cpu().numpy() for name, value in feeds.items() if value is not None})
        return {"last_hidden_state": torch.from_numpy(hidden)}


def _onnxruntime(graph: Path, threads: int | None):
    ort = _require("onnx", "onnxruntime")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    inputs = {i.name for i in session.get_inputs()}
    return lambda feeds: session.run(None, {k: v for k, v in feeds.items() if k in inputs})[0]


def _openvino(graph: Path, threads: int | None):
    ov = _require("openvino", "openvino")
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(graph)), "CPU", {"INFERENCE_NUM_THREADS": threads} if threads else {}
    )
    inputs = {port.get_any_name() for port in compiled.inputs}
    return lambda feeds: compiled({k: v for k, v in feeds.items() if k in inputs})[0]


def accelerate(model, backend: Backend, quantization: Quantization, folder: Path, threads: int | None = None):
    """`model` (a SentenceTransformer) with its transformer run by `backend`, the graph exported
    to (and reused from) `folder`. torch returns the model as it is."""
    if backend == "torch":
        return model
    if backend not in EXTRAS:
        raise ValueError(f"unknown encoding backend {backend!r}; choose torch, onnx or openvino")
    graph = export_onnx(model, folder, quantization)
    run = _onnxruntime(graph, threads) if backend == "onnx" else _openvino(graph, threads)
    transformer = model[0]
    transformer.model = GraphModel(run, transformer.model.config)
    return model
