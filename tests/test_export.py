"""LoRA checkpoints are first-class: `rltune eval` evaluates them directly and `rltune export` writes a merged,
standalone model folder with a model card; a full fine-tuning checkpoint exports too."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_trainer import recipe
from test_vllm_engine import hf_logprobs
from transformers import AutoModelForCausalLM

from conftest import run_rltune
from rltune.trainer import Trainer


def test_a_lora_checkpoint_exports_merged_and_evaluates_directly(tmp_path, demo_assets):
    pytest.importorskip("peft")
    model_dir, data_file = demo_assets
    lora = {"lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}}
    trainer = Trainer(recipe(tmp_path, *demo_assets, model=lora, train={"lr": 5e-2}))
    trainer.train()
    checkpoint = tmp_path / "run" / "checkpoint-2"
    assert (checkpoint / "adapter").is_dir() and not (checkpoint / "config.json").exists()

    out = tmp_path / "exported"
    exported = run_rltune("export", str(checkpoint), str(out), cwd=tmp_path)
    assert f"merged the LoRA adapters of {checkpoint} into {model_dir}" in exported.stdout + exported.stderr
    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    prompt, completion = trainer.tokenizer("3+4=")["input_ids"], trainer.tokenizer("\\boxed{7}")["input_ids"]
    adapted = hf_logprobs(trainer.policy, prompt, completion, 1.0)
    assert torch.allclose(hf_logprobs(merged, prompt, completion, 1.0), adapted, atol=1e-5)
    assert (hf_logprobs(base, prompt, completion, 1.0) - adapted).abs().max() > 1e-2  # the adapters mattered
    card = (out / "README.md").read_text()
    assert f"from **{model_dir}** for 2 RL steps (LoRA adapters, merged" in card
    assert "## Recipe" in card and "lora:" in card and "| reward/total |" in card

    bench = tmp_path / "sums.jsonl"
    bench.write_text("".join(json.dumps({"question": f"{a}+{a}=", "answer": str(2 * a)}) + "\n" for a in range(3)))
    args = ["eval", "--model", str(checkpoint), "--benchmarks", f"{bench}:question:answer", "--n", "2"]
    run_rltune(
        *args, "--engine", "hf", "--max-tokens", "8", "--no-chat-template", "--out", str(tmp_path / "ev"), cwd=tmp_path
    )
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert results["benchmarks"]["sums"]["metrics"]["problems"] == 3
    assert str(tmp_path / "ev" / "merged-model") in results["model"]

    refused = run_rltune("export", str(checkpoint), str(out), cwd=tmp_path, ok=False)
    assert refused.returncode != 0 and "exists and is not an empty folder" in refused.stderr


def test_a_full_checkpoint_exports_its_model_files_and_a_card(tmp_path, demo_assets):
    Trainer(recipe(tmp_path, *demo_assets, train={"steps": 1})).train()
    checkpoint = tmp_path / "run" / "checkpoint-1"
    out = tmp_path / "exported"
    run_rltune("export", str(checkpoint), str(out), cwd=tmp_path)
    assert not (out / "trainer_state.pt").exists() and (out / "model.safetensors").is_file()
    exported = AutoModelForCausalLM.from_pretrained(out).state_dict()
    saved = AutoModelForCausalLM.from_pretrained(checkpoint).state_dict()
    assert all(torch.equal(exported[k], saved[k]) for k in saved)
    assert "for 1 RL steps (full fine-tuning)" in (out / "README.md").read_text()


def _adapter_folder(tmp_path, base: str | None, recipe_text: str | None):
    checkpoint = tmp_path / "run" / "checkpoint-4"
    (checkpoint / "adapter").mkdir(parents=True)
    (checkpoint / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    if recipe_text is not None:
        (checkpoint / "recipe.yaml").write_text(recipe_text)
    return checkpoint


def test_the_lora_base_comes_from_the_adapter_then_the_recipe(tmp_path):
    from rltune.errors import RLTuneError
    from rltune.export import is_lora_checkpoint, lora_base, merge_lora_checkpoint

    checkpoint = _adapter_folder(tmp_path / "a", "org/base", "model: {path: other}\n")
    assert is_lora_checkpoint(checkpoint) and lora_base(checkpoint) == "org/base"
    assert lora_base(_adapter_folder(tmp_path / "b", None, "model: {path: from/recipe}\n")) == "from/recipe"
    for folder, recipe_text in [("c", None), ("d", "")]:
        with pytest.raises(RLTuneError, match="its adapter names no base model"):
            lora_base(_adapter_folder(tmp_path / folder, "", recipe_text))
    missing = _adapter_folder(tmp_path / "e", str(tmp_path / "gone"), None)
    with pytest.raises(RLTuneError, match="cannot load its base model .*gone.* to merge the adapters into"):
        merge_lora_checkpoint(missing, tmp_path / "out")


def test_the_model_card_shows_the_last_metrics_logged_at_its_step(tmp_path):
    from rltune.export import model_card

    run = tmp_path / "run"
    run.mkdir()
    logged = [{"step": 3, "reward/total": 0.1, "loss": 2.0}, {"step": 3, "reward/total": 0.25, "loss": 1.5},
              {"step": 4, "reward/total": 0.9, "loss": 1.0}]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in logged))
    card = model_card(run, 3, "", None, merged=True)  # a resumed run logged step 3 twice: the later one counts
    assert "| reward/total | 0.25 |" in card and "| loss | 1.5 |" in card and "0.9" not in card
    assert "base_model: unknown" in card and "for 3 RL steps (full fine-tuning)." in card
    card = model_card(run, 9, "model: {path: org/m}\n", None, merged=True)  # no line for step 9: the last one
    assert "| reward/total | 0.9 |" in card and "base_model: org/m" in card


def _saved_checkpoint(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from rltune.checkpoint import save_checkpoint

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    state = {"step": 1, "optimizer": {}, "scheduler": {}, "data": {}, "rng": [{}]}
    return save_checkpoint(tmp_path / "run", 1, model, tokenizer, state, "model: {path: tiny}\n", keep=2)


def test_export_refuses_a_damaged_checkpoint_and_writes_a_manifest_of_its_own(tmp_path, tiny_model_dir):
    from rltune.checkpoint import MANIFEST, file_digests, verify_checkpoint
    from rltune.errors import RLTuneError
    from rltune.export import export_checkpoint

    checkpoint = _saved_checkpoint(tmp_path, tiny_model_dir)
    out = export_checkpoint(checkpoint, tmp_path / "exported")
    assert json.loads((out / MANIFEST).read_text()) == file_digests(out)
    assert "README.md" in file_digests(out) and "trainer_state.pt" not in file_digests(out)
    verify_checkpoint(out)
    weights = checkpoint / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(RLTuneError, match="model.safetensors changed or vanished"):
        export_checkpoint(checkpoint, tmp_path / "damaged")
    assert not (tmp_path / "damaged").exists()


def test_export_to_a_file_or_an_unwritable_place_is_one_line(tmp_path, tiny_model_dir):
    from rltune.errors import RLTuneError
    from rltune.export import export_checkpoint

    checkpoint = _saved_checkpoint(tmp_path, tiny_model_dir)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(RLTuneError, match="exists and is not an empty folder"):
        export_checkpoint(checkpoint, tmp_path / "a-file")
    with pytest.raises(RLTuneError, match=f"cannot export {checkpoint} to {tmp_path / 'a-file' / 'out'}"):
        export_checkpoint(checkpoint, tmp_path / "a-file" / "out")


def test_an_export_cut_short_by_a_full_disk_leaves_nothing_behind(tmp_path, tiny_model_dir, monkeypatch):
    import errno
    import shutil

    from rltune.errors import RLTuneError
    from rltune.export import export_checkpoint

    checkpoint = _saved_checkpoint(tmp_path, tiny_model_dir)
    copied = []
    copy = shutil.copy2

    def filling(src, dst):  # the disk fills up after the first file
        if copied:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        copied.append(src)
        return copy(src, dst)

    monkeypatch.setattr(shutil, "copy2", filling)
    with pytest.raises(RLTuneError, match=r"No space left on device \(.* GB free there\); nothing was written"):
        export_checkpoint(checkpoint, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # neither the folder nor a temporary one
    monkeypatch.setattr(shutil, "copy2", copy)
    assert (export_checkpoint(checkpoint, tmp_path / "out") / "model.safetensors").is_file()  # the rerun works


def test_lora_adapters_refuse_a_base_model_replaced_at_their_path(tmp_path, demo_assets, monkeypatch):
    import shutil

    from rltune.cli import main
    from rltune.demo import build_tiny_model
    from rltune.errors import RLTuneError
    from rltune.export import export_checkpoint, lora_base

    pytest.importorskip("peft")
    base = tmp_path / "base"
    shutil.copytree(demo_assets[0], base)
    monkeypatch.chdir(tmp_path)
    lora = {"path": "base", "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}}  # a relative path
    trainer = Trainer(recipe(tmp_path, *demo_assets, model=lora, train={"steps": 1}))
    trainer.train()
    trainer.close()
    checkpoint = tmp_path / "run" / "checkpoint-1"
    assert lora_base(checkpoint) == str(base)  # recorded absolute: export and eval work from any folder
    assert (export_checkpoint(checkpoint, tmp_path / "good") / "model.safetensors").is_file()
    vocab = AutoModelForCausalLM.from_pretrained(base).config.vocab_size
    build_tiny_model(vocab, seed=1).save_pretrained(base)  # another model at the same path
    with pytest.raises(RLTuneError, match=rf"trained on {base} with weights sha256 \w+, but the model there now is "
                       r"another one \(sha256 \w+\)"):  # fmt: skip
        export_checkpoint(checkpoint, tmp_path / "bad")
    bench = tmp_path / "sums.jsonl"
    bench.write_text(json.dumps({"question": "1+1=", "answer": "2"}) + "\n")
    args = ["eval", "--model", str(checkpoint), "--benchmarks", f"{bench}:question:answer", "--engine", "hf"]
    assert main([*args, "--out", str(tmp_path / "ev")]) == 2


@pytest.mark.heavy  # a LoRA run of its own; make test-all
def test_a_lora_checkpoint_whose_base_moved_exports_with_base_model(tmp_path, demo_assets):
    """The base folder is renamed after training: export names --base-model, which takes the moved copy (its
    weights checked against the ones trained on), and refuses another model there."""
    pytest.importorskip("peft")
    model_dir, data_file = demo_assets
    base = tmp_path / "base"
    shutil.copytree(model_dir, base)
    lora = {"path": str(base), "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}}
    Trainer(recipe(tmp_path, base, data_file, model=lora, train={"steps": 1, "lr": 5e-2})).train()
    checkpoint = tmp_path / "run" / "checkpoint-1"
    moved = tmp_path / "moved-base"
    base.rename(moved)
    refused = run_rltune("export", checkpoint, tmp_path / "a", cwd=tmp_path, ok=False)
    assert "is gone" in refused.stderr or "now is gone" in refused.stderr
    assert "--base-model" in refused.stderr
    run_rltune("export", checkpoint, tmp_path / "b", "--base-model", moved, cwd=tmp_path)
    assert (tmp_path / "b" / "model.safetensors").is_file()
    other = tmp_path / "other-base"
    shutil.copytree(moved, other)
    weights = other / "model.safetensors"
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    tensors = {k: v + 1e-3 for k, v in tensors.items()}
    save_file(tensors, weights, metadata={"format": "pt"})
    wrong = run_rltune("export", checkpoint, tmp_path / "c", "--base-model", other, cwd=tmp_path, ok=False)
    assert "would give a model nobody trained" in wrong.stderr
