"""The settings the SFT, RM and DPO trainers share: DeepSpeed (``deepspeed``) and Ray Train workers
(``resources``), checked from the stage configs down to what the HF Trainer and Ray Train receive."""

from __future__ import annotations

import os
from unittest import mock

import pytest

from rlhf.core.config import ConfigError
from rlhf.stages import load_config
from rlhf.trainers.hf import DeepSpeedSettings, deepspeed_dict
from rlhf.trainers.ray_train import TrainerResources, per_device_batch_size, scaling_config


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo"])
def test_offload_is_checked_once_for_every_trainer_stage(stage):
    with pytest.raises(ConfigError, match="deepspeed.offload_params needs deepspeed.zero_stage=3"):
        load_config(None, ["deepspeed.zero_stage=2", "deepspeed.offload_params=true"], expect_stage=stage)
    with pytest.raises(ConfigError, match="deepspeed.offload_optimizer needs deepspeed.zero_stage 2 or 3"):
        load_config(None, ["deepspeed.offload_optimizer=true"], expect_stage=stage)
    cfg = load_config(None, ["deepspeed.zero_stage=3", "deepspeed.offload_params=true",
                             "deepspeed.offload_optimizer=true"], expect_stage=stage)
    assert cfg.deepspeed.offload_params  # type: ignore[attr-defined]


def test_deepspeed_dict_carries_the_stage_and_both_offloads():
    assert deepspeed_dict(DeepSpeedSettings()) is None
    with mock.patch.dict(os.environ):  # deepspeed_dict sets the single-process group variables
        zero = deepspeed_dict(DeepSpeedSettings(zero_stage=3, offload_optimizer=True, offload_params=True))
        only_optimizer = deepspeed_dict(DeepSpeedSettings(zero_stage=2, offload_optimizer=True))
    assert zero["zero_optimization"] == {"stage": 3, "offload_optimizer": {"device": "cpu"},
                                         "offload_param": {"device": "cpu"}}
    assert only_optimizer["zero_optimization"] == {"stage": 2, "offload_optimizer": {"device": "cpu"}}


@pytest.mark.parametrize("stage", ["rm", "dpo"])
def test_ray_stages_share_one_resources_section(stage):
    cfg = load_config(None, ["resources.address=auto", "resources.object_store_mb=200", "resources.num_workers=2",
                             "resources.worker={num_cpus: 2, num_gpus: 1}"], expect_stage=stage)
    resources = cfg.resources  # type: ignore[attr-defined]
    assert isinstance(resources, TrainerResources)
    assert (resources.address, resources.object_store_mb, resources.use_gpu) == ("auto", 200, True)
    with pytest.raises(ConfigError, match=r"unknown key 'use_gpu'"):
        load_config(None, ["resources.use_gpu=true"], expect_stage=stage)


def test_scaling_config_reserves_the_worker_resources_on_cpu_and_gpu():
    cpu = scaling_config(TrainerResources(num_workers=2, worker={"num_cpus": 3}))
    assert (cpu.num_workers, cpu.use_gpu, cpu.resources_per_worker) == (2, False, {"CPU": 3})
    gpu = scaling_config(TrainerResources(num_workers=4, worker={"num_cpus": 4, "num_gpus": 1,
                                                                 "custom": {"learner_node": 0.01}}))
    assert gpu.use_gpu and gpu.num_gpus_per_worker == 1 and gpu.num_cpus_per_worker == 4
    assert gpu.additional_resources_per_worker == {"learner_node": 0.01}
    assert scaling_config(TrainerResources(worker={"num_cpus": 0, "num_gpus": 0.5})).use_gpu


def test_the_global_batch_splits_over_workers_and_accumulation():
    assert per_device_batch_size(32, 2, 4) == 4
    with pytest.raises(ValueError, match=r"resources.num_workers x train.grad_accum \(3 x 1\)"):
        per_device_batch_size(32, 3, 1)


def test_gradient_checkpointing_and_report_to_reach_every_hf_trainer(tmp_path):
    from rlhf.stages.sft import trainer_config
    from rlhf.trainers.ray_train import trainer_arguments

    keys = ["train.gradient_checkpointing=true", "train.report_to=[]"]
    sft = trainer_config(load_config(None, keys, expect_stage="sft"), tmp_path, "cpu")  # type: ignore[arg-type]
    assert sft.gradient_checkpointing and sft.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert sft.report_to in ([], ["none"])
    for stage in ("rm", "dpo"):
        cfg = load_config(None, keys, expect_stage=stage)
        args = trainer_arguments(output_dir=tmp_path, **cfg.train.optimiser_arguments(), eval_steps=0,  # type: ignore[attr-defined]
                                 per_device_batch=4, seed=0, use_gpu=False, bf16=False, deepspeed=None)
        assert args["activation_checkpointing"] and args["report_to"] == ["none"]
    default = trainer_config(load_config(None, [], expect_stage="sft"), tmp_path, "cpu")  # type: ignore[arg-type]
    assert not default.gradient_checkpointing and default.report_to == ["tensorboard"]


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo"])
def test_report_to_an_uninstalled_logger_is_refused_in_one_line(stage, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match="train.report_to names wandb but the wandb package is not installed; "
                                          "pip install wandb"):
        load_config(None, ["train.report_to=[tensorboard, wandb]"], expect_stage=stage)
