"""The vLLM rollout engine's CPU-testable parts: lazy import and its errors, LLM arguments, sampling-parameter
mapping, HF -> vLLM weight names, output conversion, sync-group ranks, the worker-side weight loading over a
real gloo group, and the PPO configuration rules of the GPU path.

vLLM itself runs on CUDA only (the ``vllm`` extra); its objects are stood in for by plain namespaces with
the fields vLLM 0.25 returns (``RequestOutput.outputs[j].token_ids/logprobs/finish_reason/text``).
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
from types import SimpleNamespace

import pydantic
import pytest
import torch

from rlhf.core.errors import UserError
from rlhf.models.config import TinyModelConfig
from rlhf.roles.weight_sync import connect_sync_group, rank_layout
from rlhf.rollout import SamplingParams, TransformersRolloutEngine, load_named_tensors, open_engine
from rlhf.rollout.vllm_engine import (
    VLLMRolloutEngine,
    byte_chunks,
    check_weight_names,
    engine_kwargs,
    prompt_token_logprobs,
    request_seeds,
    require_vllm,
    samples_from_outputs,
    vllm_parameter_name,
)
from rlhf.rollout.vllm_settings import VLLMSettings
from rlhf.rollout.vllm_worker import WeightSyncExtension, pack_tensors, unpack_tensor
from rlhf.rollout.weight_transfer import SyncGroup, manifest_of, send_tensors
from rlhf.utils.distributed import free_port


@pytest.fixture(scope="module")
def tiny_path() -> str:
    from rlhf.models.loader import resolve_model_path

    return resolve_model_path("tiny", TinyModelConfig())


# ---------------------------------------------------------------- import and errors


def test_importing_the_project_does_not_import_vllm():
    code = ("import sys, rlhf.rollout, rlhf.configs.ppo, rlhf.stages.ppo, rlhf.stages.generate, rlhf.roles.inference; "
            "print('vllm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
def test_vllm_without_cuda_is_a_one_line_error(tiny_path):
    with pytest.raises(UserError, match="needs a CUDA GPU and this machine has none") as err:
        open_engine("vllm", tiny_path)
    assert "\n" not in str(err.value) and "transformers" in str(err.value)
    with pytest.raises(UserError, match="runs on CUDA only, but device is 'cpu'"):
        open_engine("vllm", tiny_path, device="cpu")


def test_missing_vllm_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the GPU edge; the package stays missing
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(UserError, match=r"pip install 'rlhf-pipeline\[vllm\]'"):
        require_vllm()


def test_vllm_settings_for_the_transformers_engine_are_refused(tiny_path):
    with pytest.raises(UserError, match="vLLM settings were given for the transformers engine"):
        open_engine("transformers", tiny_path, vllm=VLLMSettings())


def test_generate_with_vllm_on_cpu_fails_in_one_line(tmp_path, tiny_path):
    config = tmp_path / "gen.yaml"
    config.write_text(f"stage: generate\nrun: {{root: {tmp_path / 'runs'}}}\n"
                      f"policies: [{{name: a, path: {tiny_path}, engine: vllm}}]\nprompts: {{limit: 2}}\n")
    out = subprocess.run([sys.executable, "-m", "rlhf.cli", "generate", str(config)], capture_output=True, text=True,
                         check=False)
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("rlhf: error: rollout engine 'vllm' needs a CUDA GPU")
    assert not list((tmp_path / "runs").rglob("manifest.json"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")
def test_ppo_with_vllm_on_a_cpu_machine_fails_at_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-m", "rlhf.cli", "train", "ppo", f"run.root={tmp_path}",
                          "rollout.engine=vllm", "resources.rollout.num_gpus=1", "eval.prompts=0"],
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("rlhf: error: rollout engine 'vllm' needs a CUDA GPU")
    assert not list(tmp_path.rglob("manifest.json"))


# ---------------------------------------------------------------- engine and sampling arguments


def test_engine_kwargs_map_the_settings():
    kwargs = engine_kwargs("/models/p", VLLMSettings(gpu_memory_utilization=0.4, enforce_eager=True), "bfloat16",
                           sleep=True, seed=3)
    assert kwargs == {
        "model": "/models/p", "tokenizer": "/models/p", "dtype": "bfloat16", "seed": 3, "tensor_parallel_size": 1,
        "distributed_executor_backend": "uni", "gpu_memory_utilization": 0.4, "enforce_eager": True,
        "enable_prefix_caching": True, "enable_sleep_mode": True, "logprobs_mode": "processed_logprobs",
        "worker_extension_cls": "rlhf.rollout.vllm_worker.WeightSyncExtension"}
    wide = engine_kwargs("/m", VLLMSettings(tensor_parallel_size=4, max_model_len=4096), "float16", sleep=False)
    assert wide["distributed_executor_backend"] == "mp" and wide["tensor_parallel_size"] == 4
    assert wide["max_model_len"] == 4096 and wide["enable_sleep_mode"] is False
    # The worker extension is named by its import path and must import (vLLM resolves it in each worker).
    module, _, name = kwargs["worker_extension_cls"].rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name) is WeightSyncExtension
    with pytest.raises(pydantic.ValidationError, match="gpu_memory_utilization"):
        VLLMSettings(gpu_memory_utilization=1.5)
    with pytest.raises(pydantic.ValidationError, match="unknown key 'tensor_parallel'"):
        VLLMSettings.model_validate({"tensor_parallel": 2})


def test_every_sampling_field_has_its_vllm_counterpart():
    params = SamplingParams(n=3, temperature=0.7, top_p=0.9, top_k=40, max_new_tokens=12, stop=("###",))
    kwargs = params.vllm_kwargs(seed=11)
    renamed = {"max_new_tokens": "max_tokens"}
    for field in params.__dataclass_fields__:
        value = getattr(params, field)
        assert kwargs[renamed.get(field, field)] == (list(value) if isinstance(value, tuple) else value), field
    assert kwargs["seed"] == 11 and kwargs["logprobs"] == 0  # the sampled token's log-prob only
    assert SamplingParams(top_k=0).vllm_kwargs()["top_k"] == -1  # "all tokens" in every vLLM version


def test_each_prompt_gets_its_own_seed():
    seeds = request_seeds(7, 64)
    assert seeds == request_seeds(7, 64) and len(set(seeds)) == 64
    assert all(0 <= s < 2**31 for s in seeds) and request_seeds(8, 64) != seeds
    # the n replies of a prompt take the seeds s .. s + n - 1: no two prompts' ranges meet for small n
    ranges = sorted(seeds)
    assert min(b - a for a, b in itertools.pairwise(ranges)) > 16


# ---------------------------------------------------------------- weight names


def _fused_names(hf_names: list[str], tied: bool) -> set[str]:
    """The parameter names vLLM's Llama has for these HF names (fused projections, shared tied head)."""
    out = set()
    for name in hf_names:
        if tied and name.startswith("lm_head."):
            continue
        out.add(re.sub(r"\.(gate|up)_proj\.", ".gate_up_proj.", re.sub(r"\.(q|k|v)_proj\.", ".qkv_proj.", name)))
    return out


def test_hf_names_map_onto_fused_vllm_parameters():
    assert vllm_parameter_name("model.layers.3.self_attn.k_proj.weight") == ("model.layers.3.self_attn.qkv_proj.weight", "k")
    assert vllm_parameter_name("model.layers.0.self_attn.q_proj.bias") == ("model.layers.0.self_attn.qkv_proj.bias", "q")
    assert vllm_parameter_name("model.layers.0.mlp.up_proj.weight") == ("model.layers.0.mlp.gate_up_proj.weight", 1)
    assert vllm_parameter_name("model.layers.0.mlp.gate_proj.weight") == ("model.layers.0.mlp.gate_up_proj.weight", 0)
    assert vllm_parameter_name("model.layers.0.self_attn.o_proj.weight") == ("model.layers.0.self_attn.o_proj.weight", None)
    assert vllm_parameter_name("model.norm.weight") == ("model.norm.weight", None)


@pytest.mark.parametrize("tied", [True, False])
def test_a_learners_manifest_checks_against_the_vllm_model(tiny_path, tied):
    from rlhf.models.loader import load_model

    names = [spec.name for spec in manifest_of(load_model(tiny_path, "policy", device="cpu").named_parameters())]
    if not tied:
        names = [*names, "lm_head.weight"] if "lm_head.weight" not in names else names
    vllm_names = _fused_names(names, tied)
    assert "model.layers.0.self_attn.qkv_proj.weight" in vllm_names
    assert check_weight_names(names, vllm_names, tied) == len(names) - (tied and "lm_head.weight" in names)
    # Rotary caches are accepted and not loaded.
    assert check_weight_names([*names, "model.layers.0.self_attn.rotary_emb.inv_freq"], vllm_names, tied) == \
        check_weight_names(names, vllm_names, tied)
    with pytest.raises(ValueError, match=r"no vLLM parameter \(first: 'model.layers.0.adapter.weight'"):
        check_weight_names([*names, "model.layers.0.adapter.weight"], vllm_names, tied)
    without_o = [n for n in names if n != "model.layers.2.self_attn.o_proj.weight"]
    with pytest.raises(ValueError, match=r"1 vLLM parameters would get no learner tensor \(first: "
                                         r"'model.layers.2.self_attn.o_proj.weight'\)"):
        check_weight_names(without_o, vllm_names, tied)
    without_k = [n for n in names if n != "model.layers.1.self_attn.k_proj.weight"]
    with pytest.raises(ValueError, match=r"'model.layers.1.self_attn.qkv_proj.weight' would get shards \['q', 'v'\] "
                                         r"but not \['k'\]"):
        check_weight_names(without_k, vllm_names, tied)


def test_an_untied_head_must_exist_in_vllm():
    with pytest.raises(ValueError, match="'lm_head.weight'"):
        check_weight_names(["lm_head.weight"], {"model.embed_tokens.weight"}, tied_embeddings=False)
    both = ["model.embed_tokens.weight", "lm_head.weight"]
    assert check_weight_names(both, {"model.embed_tokens.weight"}, tied_embeddings=True) == 1


# ---------------------------------------------------------------- outputs


def _logprob(value: float) -> SimpleNamespace:
    return SimpleNamespace(logprob=value, rank=1, decoded_token=None)


def _completion(index: int, tokens: list[int], reason: str, text: str = "reply ") -> SimpleNamespace:
    steps = [{t: _logprob(-0.5 * (i + 1))} for i, t in enumerate(tokens)]
    return SimpleNamespace(index=index, text=text, token_ids=tokens, logprobs=steps, finish_reason=reason,
                           stop_reason=None)


def test_outputs_become_prompt_major_samples():
    eos = 2
    outputs = [
        SimpleNamespace(outputs=[_completion(1, [7, 8, 9], "length"), _completion(0, [5, eos], "stop", " hi ")]),
        SimpleNamespace(outputs=[_completion(0, [4, 4, 4], "stop"), _completion(1, [6], "stop")]),
    ]
    samples = samples_from_outputs(["p0", "p1"], [[1, 10], [1, 11]], outputs, n=2)
    assert [s.prompt for s in samples] == ["p0", "p0", "p1", "p1"]
    first, second = samples[0], samples[1]
    assert first.response_ids == (5, eos) and first.finished and first.text == "hi"  # EOS kept, as the protocol says
    assert first.logprobs == (-0.5, -1.0) and first.prompt_ids == (1, 10)
    assert second.response_ids == (7, 8, 9) and not second.finished  # cut by max_tokens
    assert samples[2].finished  # a stop string ends the reply too


def test_bad_outputs_are_errors():
    aborted = [SimpleNamespace(outputs=[_completion(0, [3], "abort")])]
    with pytest.raises(RuntimeError, match="finish_reason='abort'"):
        samples_from_outputs(["p"], [[1]], aborted, n=1)
    with pytest.raises(RuntimeError, match="1 completions for a prompt, expected n=2"):
        samples_from_outputs(["p"], [[1]], [SimpleNamespace(outputs=[_completion(0, [3], "stop")])], n=2)
    short = _completion(0, [3, 4], "stop")
    short.logprobs = short.logprobs[:1]
    with pytest.raises(RuntimeError, match="1 log-probs for 2 tokens"):
        samples_from_outputs(["p"], [[1]], [SimpleNamespace(outputs=[short])], n=1)


def test_prompt_logprobs_are_read_at_the_response_positions():
    prompt_logprobs = [None, {5: _logprob(-3.0)}, {8: _logprob(-0.25)}, {9: _logprob(-0.75)}]
    assert prompt_token_logprobs(2, [8, 9], prompt_logprobs) == [-0.25, -0.75]
    with pytest.raises(RuntimeError, match="4 prompt log-probs for 5 tokens"):
        prompt_token_logprobs(2, [8, 9, 1], prompt_logprobs)


# ---------------------------------------------------------------- the sync group and the worker extension


@pytest.mark.parametrize("tensor", [
    torch.randn(3, 5), torch.randn(4, 2).to(torch.bfloat16), torch.arange(6).reshape(2, 3), torch.tensor(2.5),
    torch.empty(0, 4), torch.randn(6, 4)[:, 1],  # a non-contiguous view
], ids=["fp32", "bf16", "int64", "scalar", "empty", "strided"])
def test_tensors_cross_the_rpc_as_plain_rows(tensor):
    import msgpack

    rows = msgpack.unpackb(msgpack.packb(pack_tensors([("w", tensor)])))  # what vLLM's RPC keeps: plain values
    name, back = unpack_tensor(rows[0])
    assert name == "w" and back.dtype == tensor.dtype and back.shape == tensor.shape
    assert torch.equal(back, tensor)


def test_weights_go_to_the_workers_in_byte_bounded_chunks():
    items = [(f"w{i}", torch.zeros(size, dtype=torch.float32)) for i, size in enumerate([10, 10, 30, 5, 1])]
    chunks = byte_chunks(items, limit=100)  # 40, 40, 120, 20 and 4 bytes
    assert [[name for name, _ in chunk] for chunk in chunks] == [["w0", "w1"], ["w2"], ["w3", "w4"]]
    assert byte_chunks([], 100) == []


def test_rank_layout_gives_each_tensor_parallel_worker_its_ranks():
    assert rank_layout([1, 1]) == ([1, 2], 3)
    assert rank_layout([2, 4, 1]) == ([1, 3, 7], 8)
    with pytest.raises(ValueError, match=">= 1 rank"):
        rank_layout([1, 0])


def test_rollout_on_the_learners_gpu_syncs_through_the_object_store():
    assert connect_sync_group([], [], "auto", "nccl", 1.0, shares_gpu=True) == "object_store"
    with pytest.raises(UserError, match="cannot pair the learner with rollout workers on the same GPU"):
        connect_sync_group([], [], "broadcast", "nccl", 1.0, shares_gpu=True)


class _VLLMModel:
    """What the worker extension calls on vLLM's model: ``load_weights`` (HF names in) and ``named_parameters``
    (vLLM's fused names out)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.calls = 0

    def load_weights(self, weights):
        self.calls += 1
        return {name for name, _ in weights} if load_named_tensors(self.model, weights) else set()

    def named_parameters(self):
        """vLLM's names: fused projections, one shared embedding when tied (the tensors are not needed)."""
        hf = [name for name, _ in self.model.named_parameters()]
        return [(name, None) for name in sorted(_fused_names(hf, self.model.config.tie_word_embeddings))]


class _Worker(WeightSyncExtension):
    def __init__(self, model: torch.nn.Module, rank: int) -> None:
        self.model_runner = SimpleNamespace(model=_VLLMModel(model))
        self.device = torch.device("cpu")
        self.rank = rank


def test_worker_extension_receives_a_broadcast_and_loads_each_tensor(tiny_path):
    from rlhf.models.loader import load_model

    learner = load_model(tiny_path, "policy", device="cpu")
    with torch.no_grad():
        for param in learner.parameters():
            param.add_(0.01)
    rollout = TransformersRolloutEngine.from_pretrained(tiny_path, device="cpu")
    worker = _Worker(rollout.model, rank=0)
    manifest = manifest_of(learner.named_parameters())
    port, sent = free_port(), []

    def learner_side() -> None:
        group = SyncGroup("127.0.0.1", port, 0, 3, "gloo", 30.0)
        sent.append(send_tensors(group, learner.named_parameters(), manifest))

    other = _Worker(TransformersRolloutEngine.from_pretrained(tiny_path, device="cpu").model, rank=1)
    threads = [threading.Thread(target=learner_side),
               threading.Thread(target=other.rlhf_join_sync_group, args=("127.0.0.1", port, 1, 3, "gloo", 30.0))]
    for thread in threads:
        thread.start()
    worker.rlhf_join_sync_group("127.0.0.1", port, 1, 3, "gloo", 30.0)  # rank offset 1 + vLLM rank 0
    threads[1].join()
    assert (worker.rlhf_sync.rank, other.rlhf_sync.rank) == (1, 2)
    rows = [[spec.name, list(spec.shape), spec.dtype] for spec in manifest]  # the msgpack-friendly form
    receiver = threading.Thread(target=lambda: sent.append(other.rlhf_receive_weights(rows)))
    receiver.start()
    assert worker.rlhf_receive_weights(rows) == len(manifest)
    receiver.join()
    threads[0].join()
    assert sent[0] == len(manifest) and worker.model_runner.model.calls == len(manifest)
    for name, tensor in learner.state_dict().items():
        assert torch.equal(rollout.model.state_dict()[name], tensor), name
    assert "model.layers.0.mlp.gate_up_proj.weight" in worker.rlhf_parameter_names()
    # The object-store path: tensors handed over directly.
    original = load_model(tiny_path, "policy", device="cpu")
    assert worker.rlhf_load_weights(pack_tensors(original.named_parameters())) == len(manifest)
    assert torch.equal(rollout.model.state_dict()["model.norm.weight"], original.state_dict()["model.norm.weight"])


class _LLM:
    """What the engine calls on ``vllm.LLM`` for weights and sleep; ``collective_rpc`` runs the worker
    extension's methods on real workers holding the tiny model, as vLLM runs them in its processes."""

    def __init__(self, workers: list[_Worker]) -> None:
        self.workers = workers
        self.calls: list[str] = []

    def collective_rpc(self, method: str, timeout=None, args=(), kwargs=None):
        self.calls.append(method)
        return [getattr(worker, method)(*args) for worker in self.workers]

    def reset_prefix_cache(self) -> bool:
        self.calls.append("reset_prefix_cache")
        return True

    def sleep(self, level: int = 1) -> None:
        self.calls.append(f"sleep({level})")

    def wake_up(self, tags=None) -> None:
        self.calls.append(f"wake_up({tags})")


def test_engine_checks_names_loads_on_every_worker_and_handles_sleep(tiny_path):
    from rlhf.models.loader import load_model, load_tokenizer

    models = [TransformersRolloutEngine.from_pretrained(tiny_path, device="cpu").model for _ in range(2)]
    llm = _LLM([_Worker(model, rank) for rank, model in enumerate(models)])
    engine = VLLMRolloutEngine(llm, load_tokenizer(tiny_path), VLLMSettings(tensor_parallel_size=2), sleep=True)
    assert engine.sync_ranks == 2
    learner = load_model(tiny_path, "policy", device="cpu")
    with torch.no_grad():
        for param in learner.parameters():
            param.mul_(0.5)
    weights = {name: t.detach().clone() for name, t in learner.named_parameters()}
    # An unknown name is refused before any worker loads anything.
    with pytest.raises(ValueError, match="'model.extra.weight'"):
        engine.load_weights({**weights, "model.extra.weight": torch.zeros(1)})
    assert "rlhf_load_weights" not in llm.calls
    assert engine.load_weights(weights) == len(weights)
    assert llm.calls[-2:] == ["rlhf_load_weights", "reset_prefix_cache"]
    for model in models:
        assert torch.equal(model.state_dict()["model.norm.weight"], weights["model.norm.weight"])
    # Asleep (level 2: weights and KV cache dropped), a load skips the prefix-cache reset; awake again it resets.
    llm.calls.clear()
    engine.sleep()
    engine.wake_up(["weights"])
    engine.load_weights(weights)
    engine.wake_up(["kv_cache"])
    engine.load_weights(weights)
    assert llm.calls == ["sleep(2)", "wake_up(['weights'])", "rlhf_load_weights", "wake_up(['kv_cache'])",
                         "rlhf_load_weights", "reset_prefix_cache"]
    awake = VLLMRolloutEngine(llm, load_tokenizer(tiny_path))
    with pytest.raises(RuntimeError, match="built without sleep mode"):
        awake.sleep()


# ---------------------------------------------------------------- the PPO configuration of the GPU path


def _ppo(**sections):
    from rlhf.configs.ppo import PPOConfig

    return PPOConfig.model_validate(sections)


@pytest.mark.parametrize(("sections", "message"), [
    ({"rollout": {"engine": "vllm"}}, "needs resources.rollout.num_gpus > 0"),
    ({"rollout": {"engine": "vllm", "vllm": {"tensor_parallel_size": 2}}, "resources": {"rollout": {"num_gpus": 1}}},
     "tensor_parallel_size=2 needs resources.rollout.num_gpus=2"),
    ({"rollout": {"engine": "vllm"}, "resources": {"rollout": {"num_gpus": 2}}}, "uses one GPU"),
    ({"rollout": {"vllm": {"enforce_eager": True}}}, "rollout.vllm is set but rollout.engine is 'transformers'"),
    ({"rollout": {"engine": "vllm", "vllm": {"sleep": "on"}}, "resources": {"rollout": {"num_gpus": 1}}},
     "not colocated with the policy"),
    ({"deepspeed": {"offload_optimizer": True, "zero_stage": 1}}, "offload_optimizer needs deepspeed.zero_stage 2 or 3"),
    ({"deepspeed": {"offload_params": True, "zero_stage": 2}}, "offload_params needs deepspeed.zero_stage=3"),
    ({"algorithm": {"tis_cap": 3.0}}, "tis_cap applies to algorithm.rollout_correction=tis"),
    ({"algorithm": {"rollout_correction": "tis", "tis_cap": 0.5}}, "greater than or equal to 1"),
    ({"rollout": {"engine": "vllm", "temperature": 3.0}, "resources": {"rollout": {"num_gpus": 1}}},
     "rollout.temperature=3 is outside what vLLM samples at"),
    ({"rollout": {"engine": "vllm"}, "resources": {"rollout": {"num_gpus": 1}}, "eval": {"sampling": {"temperature": 0.005}}},
     "eval.sampling.temperature=0.005 is outside what vLLM samples at"),
    ({"rollout": {"engine": "vllm"}, "resources": {"rollout": {"num_gpus": 0.5}, "policy": {"num_gpus": 0.5},
                                                   "colocate": [["rollout", "policy"]]}},
     "set rollout.vllm.gpu_memory_utilization to vLLM's share"),
])
def test_gpu_path_configuration_errors(sections, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        _ppo(**sections)


def test_colocated_vllm_sleeps_and_the_learner_gets_the_cuda_settings(tiny_path):
    from rlhf.stages.ppo import role_specs

    shared = {"rollout": {"num_gpus": 0.5}, "policy": {"num_gpus": 0.5}, "colocate": [["rollout", "policy"]]}
    share = {"gpu_memory_utilization": 0.3}
    cfg = _ppo(rollout={"engine": "vllm", "vllm": share}, resources=shared, model={"dtype": "bfloat16"},
               deepspeed={"zero_stage": 3, "offload_optimizer": True, "offload_params": True},
               learner={"gradient_checkpointing": True})
    assert cfg.rollout_shares_gpu and cfg.rollout_sleeps
    assert not _ppo(rollout={"engine": "vllm", "vllm": {"sleep": "off", **share}}, resources=shared).rollout_sleeps
    assert not _ppo(rollout={"engine": "vllm"}, resources={"rollout": {"num_gpus": 1}}).rollout_sleeps
    specs = role_specs(cfg, tiny_path)
    assert specs.rollout.engine == "vllm" and specs.rollout.sleep and specs.rollout.vllm == cfg.rollout.vllm
    spec = specs.policy
    assert (spec.dtype, spec.zero_stage, spec.deepspeed.offload_optimizer, spec.deepspeed.offload_params,
            spec.gradient_checkpointing) == ("bfloat16", 3, True, True, True)
    from rlhf.trainers.deepspeed_engine import ds_config

    zero = ds_config(spec, world_size=2)["zero_optimization"]
    assert zero["offload_optimizer"]["device"] == "cpu" and zero["offload_param"]["device"] == "cpu"
    assert ds_config(spec, world_size=2)["bf16"] == {"enabled": True}


def test_generate_config_checks_the_vllm_temperature_and_settings():
    from rlhf.stages.generate import GenerateConfig

    policy = {"name": "a", "path": "tiny", "engine": "vllm"}
    with pytest.raises(pydantic.ValidationError, match="sampling.temperature=0.005 is outside"):
        GenerateConfig.model_validate({"policies": [policy], "sampling": {"temperature": 0.005}})
    with pytest.raises(pydantic.ValidationError, match="no policy uses engine: vllm"):
        GenerateConfig.model_validate({"policies": [{"name": "a", "path": "tiny"}], "vllm": {"enforce_eager": True}})
    assert GenerateConfig.model_validate({"policies": [policy], "vllm": {"enforce_eager": True}}).vllm.enforce_eager
