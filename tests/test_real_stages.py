"""Every stage on a real pretrained chat model, SmolLM2-135M-Instruct, for a few steps (LoRA keeps it
affordable on CPU): finite logged losses, trainable weights that changed, artifacts that plain
transformers/peft/datasets open and generate from, prompts in SmolLM2's own ChatML template and replies that
end at ``<|im_end|>`` (which is also its pad token) with that token inside the masks.

The stages chain as in a round: SFT and the reward model start from the instruct model, DPO and PPO from it
too, PPO's critic from the reward model; the eval stage compares DPO with the instruct model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from rlhf.stages import load_config

pytestmark = pytest.mark.real

IM_END = "<|im_end|>"
PROMPTS = ["Where is my order #A12345?", "Can I return the desk lamp I bought last week?"]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("real-runs")


@pytest.fixture(scope="module")
def local_ray():
    import ray

    from rlhf.core.cluster import worker_env

    ray.init(num_cpus=6, include_dashboard=False, object_store_memory=400 * 1024 * 1024,
             runtime_env={"env_vars": worker_env()}, logging_config=ray.LoggingConfig(log_level="ERROR"))
    yield
    ray.shutdown()


def _config(stage: str, root: Path, smollm2: Path, *overrides: str):
    return load_config(None, [f"run.root={root}", f"model.name_or_path={smollm2}", "model.lora.enabled=true",
                              *overrides], expect_stage=stage)


def _losses(stage_dir: Path, key: str) -> list[float]:
    rows = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    values = [row[key] for row in rows if key in row]
    assert values and all(math.isfinite(v) for v in values), (key, values)
    return values


def _adapter_trained(adapter: Path) -> dict[str, torch.Tensor]:
    """The adapter's weights; LoRA's B matrices start at zero, so a trained adapter has non-zero ones."""
    from safetensors.torch import load_file

    weights = load_file(str(adapter / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items()), "LoRA B stayed zero"
    return weights


def _weights_changed(base: Path, trained: Path, name: str = "model.layers.0.self_attn.q_proj.weight") -> bool:
    from safetensors import safe_open

    with safe_open(str(base / "model.safetensors"), "pt") as a, safe_open(str(trained / "model.safetensors"), "pt") as b:
        return not torch.equal(a.get_tensor(name), b.get_tensor(name))


def _card_names_lineage(model_dir: Path, base: Path) -> None:
    card = (model_dir / "README.md").read_text()
    assert "## Lineage" in card and str(base) in card


def _generates(model_dir: Path) -> None:
    """Plain transformers opens the folder and generates a reply in the model's template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    batch = tok.apply_chat_template([{"role": "user", "content": PROMPTS[0]}],
                                    add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**batch, max_new_tokens=16, do_sample=False)
    assert tok.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_rollouts_use_the_chat_template_and_keep_the_eos_in_the_masks(smollm2):
    from rlhf.rollout import SamplingParams, TransformersRolloutEngine
    from rlhf.rollout.containers import Rollout

    engine = TransformersRolloutEngine.from_pretrained(str(smollm2), device="cpu", batch_size=4)
    tok = engine.tokenizer
    eos = tok.convert_tokens_to_ids(IM_END)
    assert tok.pad_token_id == tok.eos_token_id == eos
    rendered = tok.decode(engine.prompt_ids(PROMPTS)[0])
    assert rendered.startswith("<|im_start|>system") and rendered.endswith("<|im_start|>assistant\n")
    assert f"<|im_start|>user\n{PROMPTS[0]}{IM_END}" in rendered
    samples = engine.generate(PROMPTS, SamplingParams(n=2, temperature=0.7, max_new_tokens=48), seed=0)
    finished = [s for s in samples if s.finished]
    assert finished, "no reply finished within 48 tokens"
    assert all(s.response_ids[-1] == eos and eos not in s.response_ids[:-1] for s in finished)
    rollout = Rollout.from_samples(samples, pad_id=tok.pad_token_id, n=2)
    mask = rollout.tokens.response_mask
    for row, sample in enumerate(samples):
        # Padding (the same id as EOS) is outside the mask; the reply's own EOS is inside it.
        assert int(mask[row].sum()) == len(sample.response_ids)
        assert mask[row, len(sample.response_ids) - 1] == 1


def test_generate_stage_writes_candidates_that_load_as_a_dataset(smollm2, root):
    from datasets import load_dataset

    from rlhf.stages.generate import run_generate

    cfg = load_config(None, [f"run.root={root}", f"policies=[{{name: smol, path: {smollm2}}}]", "prompts.limit=3",
                             "sampling.n=2", "sampling.max_new_tokens=32", "sampling.temperature=0.7"],
                      expect_stage="generate")
    stage_dir = run_generate(cfg)  # type: ignore[arg-type]
    rows = load_dataset(str(stage_dir), "candidates", split="train")
    assert len(rows) == 3 and all(IM_END not in json.dumps(row) for row in rows)


def test_sft_trains_on_the_reply_and_its_im_end_only(smollm2, tmp_path):
    """TRL's completion-only labels on SmolLM2's template: the prompt (system and user turns) is masked, the
    reply and its closing ``<|im_end|>`` are learned."""
    from trl import SFTTrainer

    from rlhf.models.loader import load_model, load_tokenizer
    from rlhf.stages.sft import to_dataset, trainer_config

    cfg = load_config(None, [f"model.name_or_path={smollm2}", "train.max_length=128"], expect_stage="sft")
    tok = load_tokenizer(str(smollm2))
    trainer = SFTTrainer(model=load_model(str(smollm2), "policy", device="cpu"),
                         args=trainer_config(cfg, tmp_path, "cpu"),  # type: ignore[arg-type]
                         train_dataset=to_dataset([{"prompt": PROMPTS[0], "completion": "It ships tomorrow."}]),
                         processing_class=tok)
    row = trainer.train_dataset[0]
    assert tok.decode(row["input_ids"]).startswith("<|im_start|>system")
    learned = [i for i, label in zip(row["input_ids"], row["labels"]) if label != -100]
    assert tok.decode(learned).rstrip("\n") == f"It ships tomorrow.{IM_END}"


@pytest.fixture(scope="module")
def sft_run(smollm2, root) -> Path:
    from rlhf.stages.sft import run_sft

    cfg = _config("sft", root, smollm2, "data.demo_examples=24", "train.max_steps=3", "train.batch_size=4",
                  "train.max_length=128", "train.gradient_checkpointing=true", "train.logging_steps=1",
                  "train.lr=2e-4", "eval.prompts=2", "eval.sampling.max_new_tokens=24", "eval.bootstrap=20")
    return run_sft(cfg)  # type: ignore[arg-type]


def test_sft_lora_on_smollm2(smollm2, sft_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert len(_losses(sft_run, "train/loss")) == 3
    _adapter_trained(sft_run / "adapter")
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smollm2), sft_run / "adapter")
    assert peft.peft_config["default"].r == 8
    assert _weights_changed(smollm2, sft_run / "model")
    _card_names_lineage(sft_run / "model", smollm2)
    _generates(sft_run / "model")


@pytest.fixture(scope="module")
def rm_run(smollm2, root) -> Path:
    from rlhf.stages.rm import run_reward_model

    cfg = _config("rm", root, smollm2, "data.demo_prompts=24", "data.demo_candidates=2", "data.max_train_pairs=16",
                  "train.max_steps=2", "train.batch_size=8", "train.max_length=160", "train.logging_steps=1",
                  "train.save_steps=100", "eval.best_of_n_prompts=0", "eval.stats_max_responses=16",
                  "eval.batch_size=8")
    return run_reward_model(cfg)  # type: ignore[arg-type]


def test_reward_model_lora_on_smollm2(smollm2, rm_run):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rlhf.models.reward import chat_ids

    assert len(_losses(rm_run, "train/loss")) == 2
    weights = _adapter_trained(rm_run / "adapter")
    assert any(".score." in k for k in weights), "the score head is not saved with the adapter"
    summary = json.loads((rm_run / "eval.json").read_text())["summary"]
    assert 0.0 <= summary["accuracy"] <= 1.0
    # The scored sequence is SmolLM2's template with the reply's <|im_end|> inside it.
    tok = AutoTokenizer.from_pretrained(rm_run / "model")
    ids = chat_ids(tok, [{"role": "user", "content": PROMPTS[0]}], "It ships tomorrow.")
    text = tok.decode(ids)
    assert "<|im_start|>assistant\nIt ships tomorrow.<|im_end|>" in text
    scores = []
    for model in (AutoModelForSequenceClassification.from_pretrained(rm_run / "model", num_labels=1),
                  AutoPeftModelForSequenceClassification.from_pretrained(rm_run / "adapter", num_labels=1)):
        with torch.no_grad():
            scores.append(float(model(input_ids=torch.tensor([ids])).logits[0, 0]))
    assert math.isfinite(scores[0]) and scores[0] == pytest.approx(scores[1], abs=1e-3)
    _card_names_lineage(rm_run / "model", smollm2)


def test_dpo_lora_on_smollm2(smollm2, root):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from rlhf.stages.dpo import run_dpo

    cfg = _config("dpo", root, smollm2, "data.demo_prompts=16", "data.demo_candidates=2", "train.max_steps=2",
                  "train.batch_size=4", "train.max_length=160", "train.logging_steps=1", "train.save_steps=100",
                  "train.lr=2e-4", "eval.prompts=2", "eval.sampling.max_new_tokens=24", "eval.bootstrap=20")
    stage_dir = run_dpo(cfg)  # type: ignore[arg-type]
    assert len(_losses(stage_dir, "train/loss")) == 2
    _adapter_trained(stage_dir / "adapter")
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(smollm2), stage_dir / "adapter")
    assert _weights_changed(smollm2, stage_dir / "model")
    _card_names_lineage(stage_dir / "model", smollm2)
    _generates(stage_dir / "model")


PPO_SMALL = ["rollout.prompts_per_step=4", "rollout.max_new_tokens=24", "learner.micro_batch_size=4",
             "algorithm.mini_batch_size=4", "data.demo_prompts=16", "train.progress=false", "learner.lr=1e-3",
             "train.save_steps=100"]


def test_ppo_lora_with_reward_model_and_critic_on_smollm2(smollm2, rm_run, root, local_ray):
    from rlhf.stages.ppo import run_ppo

    cfg = _config("ppo", root, smollm2, *PPO_SMALL, f"reward.model={rm_run}", "critic.init_from=reward",
                  "critic.lr=1e-4", "train.steps=2", "eval.prompts=2", "eval.sampling.max_new_tokens=16",
                  "eval.bootstrap=20")
    stage_dir = run_ppo(cfg)  # type: ignore[arg-type]
    _losses(stage_dir, "train/policy_loss")
    _losses(stage_dir, "train/critic_value_loss")
    rows = [r for r in (json.loads(x) for x in (stage_dir / "metrics.jsonl").read_text().splitlines())
            if "rollout/score_mean" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        # The tied embedding and LoRA-merged weights reach the rollout engine: its log-probs match the learner's.
        assert row["rollout/sync_probe_diff"] <= 1e-3
    _adapter_trained(stage_dir / "adapter")
    assert _weights_changed(smollm2, stage_dir / "model")
    _card_names_lineage(stage_dir / "model", smollm2)


def test_grpo_lora_with_a_rubric_reward_on_smollm2(smollm2, root, local_ray):
    from rlhf.stages.ppo import run_ppo

    cfg = _config("ppo", root, smollm2, *PPO_SMALL, "reward.function=rlhf.world.demo:gold_rubric",
                  "algorithm.advantage=grpo", "rollout.n=2", "rollout.prompts_per_step=2", "train.steps=1",
                  "eval.prompts=0", "model.lora.save=adapter")
    stage_dir = run_ppo(cfg)  # type: ignore[arg-type]
    _losses(stage_dir, "train/policy_loss")
    assert not (stage_dir / "adapter").exists() and (stage_dir / "model" / "adapter_config.json").is_file()
    _adapter_trained(stage_dir / "model")


def test_eval_stage_compares_the_sft_policy_with_smollm2(smollm2, sft_run, root):
    from rlhf.stages.eval import run_eval

    spec = {"stage": "eval", "run": {"root": str(root)},
            "checkpoints": [{"name": "sft", "path": str(sft_run)}], "baseline": {"name": "instruct", "path": str(smollm2)},
            "prompts": {"demo_count": 4}, "generation": {"max_new_tokens": 24, "batch_size": 4},
            "kl": {"enabled": False}, "best_of_n": {"n": 0}, "stats": {"n_bootstrap": 200, "lc_bootstrap": 200}}
    path = root / "eval.yaml"
    path.write_text(json.dumps(spec))
    stage_dir = run_eval(load_config(path, [], expect_stage="eval"))  # type: ignore[arg-type]
    results = json.loads((stage_dir / "results.json").read_text())
    gold = [c for c in results["comparisons"] if c["scorer"] == "gold" and c["policy"] == "sft"]
    assert gold and 0.0 <= gold[0]["win_rate"] <= 1.0
