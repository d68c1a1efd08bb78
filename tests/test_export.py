"""Exporting a finished run as a Hugging Face model directory (runs/export.py): real tiny
trainings exported and loaded back through Tunix's own safetensors loader, the same weights run
by Hugging Face's Llama definition, PEFT adapters, the manifest's content address, an atomic
directory, and the exports it refuses."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runs import export, trainer
from runs.progress import ERROR_PREFIX, RESULT_PREFIX
from tests.support.clusters import REPO_ROOT
from tests.test_trainer import run_trainer, write_config

# No database: the PostgreSQL pass of `make test` runs these once.
pytestmark = pytest.mark.database_independent

# Four steps: a checkpoint after each, the newest two (3 and 4) kept.
QUICK: dict[str, Any] = {"max_steps": 4, "max_seq_length": 64}
LORA: dict[str, Any] = {"lora_rank": 4, "lora_alpha": 8.0, "learning_rate": 1e-2}
PROMPT = "What is 22 plus 9?"
TINY_MODULES = ["down_proj", "gate_proj", "k_proj", "lm_head", "o_proj", "q_proj", "up_proj",
                "v_proj"]  # fmt: skip


def prompt_tokens() -> list[int]:
    return [trainer.BOS, *trainer.ByteTokenizer().encode(PROMPT)]


def trained(factory: pytest.TempPathFactory, name: str, **overrides: Any) -> Path:
    """A real tiny training's run directory, as the worker leaves it."""
    if importlib.util.find_spec("tunix") is None and not os.environ.get("TUNIX_REQUIRE_TRAINING"):
        pytest.skip("google-tunix is not installed (make install-tunix)")
    directory = factory.mktemp(name)
    code, _, stderr = run_trainer(write_config(directory, **QUICK, **overrides))
    assert code == 0, stderr[-3000:]
    return directory


@pytest.fixture(scope="module")
def full_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 4-step full fine-tune of the tiny preset, and its newest checkpoint exported."""
    run = trained(tmp_path_factory, "export-full")
    output = tmp_path_factory.mktemp("full-exports") / "model"
    export.export_run(run, output)
    return run, output


@pytest.fixture(scope="module")
def lora_exports(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A 4-step LoRA training of the tiny preset, exported merged and as an adapter."""
    run = trained(tmp_path_factory, "export-lora", **LORA)
    outputs = tmp_path_factory.mktemp("lora-exports")
    export.export_run(run, outputs / "merged", lora_format="merged")
    export.export_run(run, outputs / "adapter", lora_format="adapter")
    return run, outputs / "merged", outputs / "adapter"


def greedy(model: Any, tokens: list[int], count: int) -> list[int]:
    """``count`` tokens generated greedily, each by a whole forward pass (no cache) over one
    fixed length, padded on the right (which causal attention hides): the shape is compiled
    once."""
    sequence = tokens + [trainer.PAD] * count
    for at in range(len(tokens), len(sequence)):
        sequence[at] = int(export.model_logits(model, [sequence])[0, at - 1].argmax())
    return sequence[len(tokens) :]


def tensors(path: Path) -> dict[str, Any]:
    from safetensors.numpy import load_file

    return dict(load_file(str(path)))


def hf_llama_logits(directory: Path, tokens: list[int]) -> Any:
    """Hugging Face's LlamaForCausalLM forward pass (transformers' modeling_llama.py: rotate-half
    RoPE from rope_theta, grouped KV heads, RMSNorm) in float64 NumPy, from nothing but the
    export's config.json and model.safetensors."""
    import numpy as np

    config = json.loads((directory / "config.json").read_text())
    w = {k: v.astype(np.float64) for k, v in tensors(directory / "model.safetensors").items()}
    length, dim = len(tokens), config["head_dim"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    inv_freq = 1.0 / config["rope_theta"] ** (np.arange(0, dim, 2) / dim)
    angles = np.concatenate([np.outer(np.arange(length), inv_freq)] * 2, axis=-1)[:, None, :]
    cos, sin = np.cos(angles), np.sin(angles)

    def norm(x: Any, weight: Any) -> Any:
        return weight * x / np.sqrt((x**2).mean(-1, keepdims=True) + config["rms_norm_eps"])

    def rope(x: Any) -> Any:
        rotated = np.concatenate([-x[..., dim // 2 :], x[..., : dim // 2]], axis=-1)
        return x * cos + rotated * sin

    causal: Any = np.tril(np.ones((length, length), dtype=bool))
    x = w["model.embed_tokens.weight"][tokens]
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = norm(x, w[p + "input_layernorm.weight"])
        q = rope((h @ w[p + "self_attn.q_proj.weight"].T).reshape(length, heads, dim))
        k = rope((h @ w[p + "self_attn.k_proj.weight"].T).reshape(length, kv_heads, dim))
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(length, kv_heads, dim)
        k, v = (np.repeat(t, heads // kv_heads, axis=1) for t in (k, v))  # repeat_kv
        scores = np.where(causal, np.einsum("tnd,snd->nts", q, k) / np.sqrt(dim), -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attended = np.einsum("nts,snd->tnd", probs, v).reshape(length, heads * dim)
        x = x + attended @ w[p + "self_attn.o_proj.weight"].T
        h = norm(x, w[p + "post_attention_layernorm.weight"])
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        x = (
            x
            + (gate / (1 + np.exp(-gate)) * (h @ w[p + "mlp.up_proj.weight"].T))
            @ w[p + "mlp.down_proj.weight"].T
        )
    head = w["model.embed_tokens.weight" if config["tie_word_embeddings"] else "lm_head.weight"]
    return norm(x, w["model.norm.weight"]) @ head.T


# --------------------------------------------------------------------------- full fine-tune


def test_a_full_fine_tune_reloads_through_tunix_with_the_trained_models_logits(
    tunix_runtime: None, full_export: tuple[Path, Path]
) -> None:
    import numpy as np

    run, output = full_export
    trained_model = export.restored_model(run)  # Tunix's CheckpointManager, as a resume does
    expected = export.model_logits(trained_model, [prompt_tokens()])
    reloaded = export.load_export(output)
    logits = export.model_logits(reloaded, [prompt_tokens()])
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    assert (logits.argmax(-1) == expected.argmax(-1)).all()
    assert greedy(reloaded, prompt_tokens(), 8) == greedy(trained_model, prompt_tokens(), 8)
    # The trained weights, not the random ones the run started from.
    with export.tunix_mesh() as mesh:
        start, _ = trainer.build_model(trainer.read_plan(run / "tunix_config.json"), None, mesh, 42)
    assert np.abs(export.model_logits(start, [prompt_tokens()]) - expected).max() > 0.1


def test_the_export_is_a_hugging_face_llama_that_computes_the_same_logits(
    tunix_runtime: None, full_export: tuple[Path, Path]
) -> None:
    """config.json, names and layouts as transformers' Llama reads them: its forward pass,
    written out in NumPy, gives what Tunix gives."""
    import numpy as np

    _, output = full_export
    assert sorted(p.name for p in output.iterdir()) == [
        "config.json", "export.json", "model.safetensors", "tunix_rt_tokenizer.json"
    ]  # fmt: skip
    config = json.loads((output / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert {k: config[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers")} == {
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2
    }  # fmt: skip
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (4, 2)
    assert (config["vocab_size"], config["torch_dtype"]) == (259, "float32")
    assert json.loads((output / "tunix_rt_tokenizer.json").read_text()) == {
        "type": "bytes", "byte_offset": 3, "pad_id": 0, "bos_id": 1, "eos_id": 2
    }  # fmt: skip
    weights = tensors(output / "model.safetensors")
    assert weights["model.layers.0.self_attn.q_proj.weight"].shape == (64, 64)  # [heads*dim, D]
    assert weights["model.layers.1.self_attn.k_proj.weight"].shape == (32, 64)
    assert weights["model.layers.0.mlp.down_proj.weight"].shape == (64, 128)  # [out, in]
    assert weights["lm_head.weight"].shape == (259, 64)
    assert len(weights) == 1 + 2 * 9 + 2  # embeddings, 9 per layer, final norm and head
    tunix = export.export_logits(output, [prompt_tokens()])[0]
    np.testing.assert_allclose(hf_llama_logits(output, prompt_tokens()), tunix, atol=1e-4)


def test_exporting_again_gives_the_same_content_address(
    tunix_runtime: None, full_export: tuple[Path, Path], tmp_path: Path
) -> None:
    run, first = full_export
    again = export.export_run(run, tmp_path / "again", step=4)
    manifest = json.loads((first / "export.json").read_text())
    assert again["sha256"] == manifest["sha256"]
    assert again["files"] == manifest["files"]
    assert (manifest["run_id"], manifest["attempt"], manifest["step"]) == ("test-run", 1, 4)
    assert (manifest["weights"], manifest["lora_format"]) == ("full", None)
    # The address is sha256 over "<name>\t<sha256>\n" per file, by name, the manifest aside.
    lines = ""
    for name in sorted(p.name for p in first.iterdir() if p.name != "export.json"):
        digest = hashlib.sha256((first / name).read_bytes()).hexdigest()
        assert {"name": name, "bytes": (first / name).stat().st_size, "sha256": digest} in (
            manifest["files"]
        )
        lines += f"{name}\t{digest}\n"
    assert manifest["sha256"] == hashlib.sha256(lines.encode()).hexdigest()
    # An earlier checkpoint is other weights, another address.
    earlier = export.export_run(run, tmp_path / "earlier", step=3)
    assert earlier["step"] == 3
    assert earlier["sha256"] != manifest["sha256"]


def test_a_failed_export_leaves_no_directory(
    tunix_runtime: None,
    full_export: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The weights are written, then the disk fills: neither the export nor its hidden
    staging directory is left."""

    def disk_full(directory: Path) -> None:
        assert (directory / "model.safetensors").stat().st_size > 0
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "write_byte_tokenizer", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export.export_run(full_export[0], tmp_path / "exports" / "model")
    assert list((tmp_path / "exports").iterdir()) == []


def test_the_export_process_reports_its_manifest_summary(
    tunix_runtime: None, full_export: tuple[Path, Path], tmp_path: Path
) -> None:
    """``python -m runs.export CONFIG`` as the worker runs it: argv only, one result line."""
    run, first = full_export
    config = tmp_path / "export.json"
    output = tmp_path / "model"
    config.write_text(
        json.dumps(
            {"run_dir": str(run), "step": None, "lora_format": "adapter", "output": str(output)}
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "runs.export", str(config)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    (line,) = [x for x in proc.stdout.decode().splitlines() if x.startswith(RESULT_PREFIX)]
    result = json.loads(line.removeprefix(RESULT_PREFIX))
    manifest = json.loads((output / "export.json").read_text())
    # A full fine-tune exports every weight whatever lora_format says.
    assert result["weights"] == manifest["weights"] == "full"
    assert result["sha256"] == manifest["sha256"] == export.export_digest(manifest["files"])
    assert result["files"] == ["config.json", "model.safetensors", "tunix_rt_tokenizer.json"]
    assert result["bytes"] == sum(f["bytes"] for f in manifest["files"]) > 100_000
    assert (result["step"], result["attempt"], result["output"]) == (4, 1, str(output))
    assert 0 < result["seconds"] < 120
    assert manifest["sha256"] == json.loads((first / "export.json").read_text())["sha256"]


# --------------------------------------------------------------------------- LoRA


def test_a_lora_run_merged_reloads_through_tunix_with_the_lora_models_logits(
    tunix_runtime: None, lora_exports: tuple[Path, Path, Path]
) -> None:
    import numpy as np

    run, merged, _ = lora_exports
    lora_model = export.restored_model(run)  # base from the seed, adapters from the checkpoint
    expected = export.model_logits(lora_model, [prompt_tokens()])
    reloaded = export.load_export(merged)
    np.testing.assert_allclose(
        export.model_logits(reloaded, [prompt_tokens()]), expected, atol=1e-4
    )
    assert greedy(reloaded, prompt_tokens(), 8) == greedy(lora_model, prompt_tokens(), 8)
    manifest = json.loads((merged / "export.json").read_text())
    assert (manifest["weights"], manifest["lora_rank"], manifest["lora_alpha"]) == (
        "merged",
        4,
        8.0,
    )


def test_a_lora_run_as_an_adapter_is_peft_lora_that_merges_to_the_merged_export(
    tunix_runtime: None, lora_exports: tuple[Path, Path, Path]
) -> None:
    """PEFT's names and orientation (lora_A [r, in], lora_B [out, r]); the tiny preset's base
    travels with it (base/), and base + B @ A * alpha / r, merged here, is the merged export."""
    import numpy as np

    _, merged, adapter = lora_exports
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["peft_type"], config["task_type"]) == ("LORA", "CAUSAL_LM")
    assert (config["r"], config["lora_alpha"], config["use_rslora"]) == (4, 8.0, False)
    assert config["target_modules"] == TINY_MODULES
    assert config["base_model_name_or_path"] == "tunix-rt/tiny-llama3"
    pairs = tensors(adapter / "adapter_model.safetensors")
    assert len(pairs) == 2 * (2 * 7 + 1)  # 7 projections a layer, and the head
    assert pairs["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape == (4, 64)
    assert pairs["base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"].shape == (32, 4)
    assert pairs["base_model.model.model.layers.1.self_attn.o_proj.lora_A.weight"].shape == (4, 64)
    assert pairs["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"].shape == (4, 128)
    assert pairs["base_model.model.lm_head.lora_B.weight"].shape == (259, 4)
    assert json.loads((adapter / "tunix_rt_tokenizer.json").read_text())["type"] == "bytes"

    base = tensors(adapter / "base" / "model.safetensors")
    expected = tensors(merged / "model.safetensors")
    assert set(base) == set(expected)
    for name, weight in base.items():
        module = "base_model.model." + name.removesuffix(".weight")
        if f"{module}.lora_A.weight" in pairs:
            a, b = pairs[f"{module}.lora_A.weight"], pairs[f"{module}.lora_B.weight"]
            assert (b.shape[0], a.shape[1]) == weight.shape, name
            weight = weight + b @ a * (8.0 / 4)
        np.testing.assert_allclose(weight, expected[name], atol=1e-6, err_msg=name)
    # The adapters trained: merging them changed the weights they adapt.
    q = "model.layers.0.self_attn.q_proj.weight"
    assert np.abs(base[q] - expected[q]).max() > 1e-4
    # The base is the random-initialised preset and loads as a model of its own.
    assert json.loads((adapter / "base" / "config.json").read_text())["vocab_size"] == 259
    assert export.load_export(adapter / "base") is not None


def test_a_llama_3_run_merges_into_its_base_checkpoints_weights_and_files(
    tunix_runtime: None, lora_exports: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """A real Llama 3 run's checkpoints are laid out as the preset's: the LoRA run, relabelled
    Llama 3.2 1B with the preset's exported base as its base checkpoint, merges into that
    directory's safetensors and keeps its files, to the very bytes of the preset's merged
    export; as an adapter it names the real base and leaves its config.json out."""
    import shutil

    run, merged, adapter = lora_exports
    real = tmp_path / "run"
    shutil.copytree(run / "checkpoints", real / "checkpoints")
    base = adapter / "base"
    write_config(real, model_id="meta-llama/Llama-3.2-1B", checkpoint_dir=base, **QUICK, **LORA)
    manifest = export.export_run(real, tmp_path / "merged")
    assert manifest["sha256"] == json.loads((merged / "export.json").read_text())["sha256"]
    as_adapter = export.export_run(real, tmp_path / "adapter", lora_format="adapter")
    assert [f["name"] for f in as_adapter["files"]] == [
        "adapter_config.json", "adapter_model.safetensors", "tunix_rt_tokenizer.json"
    ]  # fmt: skip
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "meta-llama/Llama-3.2-1B"
    assert (
        tensors(tmp_path / "adapter" / "adapter_model.safetensors").keys()
        == tensors(adapter / "adapter_model.safetensors").keys()
    )


# --------------------------------------------------------------------------- refusals


def fake_run(directory: Path, steps: dict[int, list[int]], **overrides: Any) -> Path:
    """A run directory with empty but complete-looking checkpoints: steps by attempt."""
    write_config(directory, **overrides)
    for attempt, numbers in steps.items():
        for step in numbers:
            path = directory / "checkpoints" / f"attempt-{attempt}" / str(step)
            path.mkdir(parents=True)
            (path / "_CHECKPOINT_METADATA").write_text("{}")
    return directory


def refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str], **request: Any) -> dict[str, Any]:
    """The export process's refusal (exit 2, one TUNIX_ERROR line); nothing is written."""
    output = tmp_path / "exports" / "model"
    config = tmp_path / "export-request.json"
    config.write_text(
        json.dumps(
            {"run_dir": str(tmp_path), "step": None, "lora_format": "merged", "output": str(output)}
            | request
        )
    )
    assert export.main([str(config)]) == trainer.EXIT_REFUSED
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith(ERROR_PREFIX)]
    assert not output.exists()
    payload: dict[str, Any] = json.loads(line.removeprefix(ERROR_PREFIX))
    return payload


def test_an_unknown_step_is_refused_naming_the_steps_that_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_run(tmp_path, {1: [3, 4], 2: [6]})
    error = refusal(tmp_path, capsys, step=5)
    assert error["reason"] == "config_invalid"
    assert "step 5" in error["message"]
    assert "steps 3, 4, 6" in error["message"]


def test_a_run_without_checkpoints_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_run(tmp_path, {})
    (tmp_path / "checkpoints" / "attempt-1" / "2").mkdir(parents=True)  # unfinished: no metadata
    error = refusal(tmp_path, capsys)
    assert error["reason"] == "config_invalid"
    assert "has no complete checkpoint" in error["message"]


def test_a_real_model_whose_base_checkpoint_is_gone_is_unavailable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = tmp_path / "models" / "meta-llama" / "Llama-3.2-1B"
    fake_run(tmp_path, {1: [4]}, model_id="meta-llama/Llama-3.2-1B", checkpoint_dir=base)
    error = refusal(tmp_path, capsys)
    assert error["reason"] == "model_unavailable"
    assert str(base) in error["message"]


@pytest.mark.parametrize(
    ("model_id", "lora_rank", "lora_format"),
    [("Qwen/Qwen2.5-0.5B", 8, "merged"), ("Qwen/Qwen3-0.6B", 0, "merged"),
     ("google/gemma-3-270m", 8, "adapter")],
)  # fmt: skip
def test_an_export_no_saver_can_write_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model_id: str,
    lora_rank: int,
    lora_format: str,
) -> None:
    fake_run(tmp_path, {1: [4]}, model_id=model_id, checkpoint_dir=tmp_path, lora_rank=lora_rank)
    error = refusal(tmp_path, capsys, lora_format=lora_format)
    assert error["reason"] == "config_invalid"
    assert "cannot export" in error["message"]


def test_an_existing_output_or_a_bad_request_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_run(tmp_path, {1: [4]})
    (tmp_path / "taken").mkdir()
    error = refusal(tmp_path, capsys, output=str(tmp_path / "taken"))
    assert "already exists" in error["message"]
    assert "lora_format" in refusal(tmp_path, capsys, lora_format="qlora")["message"]
    assert "step" in refusal(tmp_path, capsys, step="latest")["message"]
    assert "absolute" in refusal(tmp_path, capsys, run_dir="runs/x")["message"]


def test_the_newest_attempt_with_a_checkpoint_is_exported_by_default(tmp_path: Path) -> None:
    """Attempt 2 restarted from scratch and reached step 2; attempt 3 left nothing: the
    default is attempt 2's step 2, and step 4 is attempt 1's."""
    fake_run(tmp_path, {1: [3, 4], 2: [2]})
    (tmp_path / "checkpoints" / "attempt-3").mkdir()
    found = export.find_checkpoints(tmp_path)
    newest = export.choose_checkpoint(found, None, "run")
    assert (newest.attempt, newest.step) == (2, 2)
    chosen = export.choose_checkpoint(found, 4, "run")
    assert (chosen.attempt, chosen.step) == (1, 4)
