"""The pipeline's config (:mod:`rlhf.configs.pipeline`): each section is checked against its stage's model at
load, and the models it uses are the stage table's."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf.configs.pipeline import SECTION_MODELS, SECTIONS, PipelineConfig
from rlhf.core.config import ConfigError
from rlhf.stages import config_class, load_config

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def test_every_section_is_validated_by_its_stage_model_from_the_table():
    stages = {stage for stage, _ in SECTIONS.values()} | {"label"}
    assert set(SECTION_MODELS) == stages
    for stage in stages:
        assert SECTION_MODELS[stage] is config_class(stage), stage


def test_a_bad_key_in_a_section_names_the_section_and_the_key():
    with pytest.raises(ConfigError, match=r"pipeline section 'sft'.*unknown key 'lrr' \(did you mean 'lr'\?\)"):
        load_config(QUICKSTART, ["sft.train.lrr=1"])
    with pytest.raises(ConfigError, match="pipeline section 'label'.*unknown key 'prot'"):
        load_config(None, ["label.service.prot=1"], expect_stage="pipeline")


def test_a_wired_key_in_a_section_is_refused():
    with pytest.raises(ConfigError, match="generate.prompts.path is set by the pipeline; remove it from the config"):
        load_config(None, ["generate.prompts.path=x.jsonl"], expect_stage="pipeline")


def test_stage_config_applies_the_wiring():
    cfg = load_config(QUICKSTART)
    assert isinstance(cfg, PipelineConfig)
    push = cfg.stage_config("label_push", {"candidates": "runs/generate/x"}, round_no=2)
    assert (push.stage, push.candidates, push.run.name, push.run.root) == ("label_push", "runs/generate/x", "r2",
                                                                          cfg.run.root)
    assert cfg.labeling_config().stage == "label"


def test_push_honeypots_follow_the_bots_rubric_unless_the_push_names_its_own():
    team = ["label_simulate.rubric=my_team.rubric:score"]  # not imported: configs only name it
    push = load_config(QUICKSTART, team).stage_config("label_push", {"candidates": "c"}, round_no=1)
    assert push.honeypots.demo == 10 and push.honeypots.rubric == "my_team.rubric:score"
    own = load_config(QUICKSTART, [*team, "label_push.honeypots.rubric=other.rubric:score"])
    assert own.stage_config("label_push", {"candidates": "c"}, 1).honeypots.rubric == "other.rubric:score"
    assert load_config(QUICKSTART).stage_config("label_push", {"candidates": "c"}, 1).honeypots.rubric == \
        "rlhf.world.demo:gold_rubric"
    no_demo = load_config(QUICKSTART, [*team, "label_push.honeypots.demo=0"])  # nothing for a rubric to order
    assert no_demo.stage_config("label_push", {"candidates": "c"}, 1).honeypots.rubric == "rlhf.world.demo:gold_rubric"
    assert no_demo.label_push == {"template": "ranking-v2-8", "min_submitted": 2,
                                  "honeypots": {"demo": 0, "min_gap": 0.1}}  # the section itself is unchanged


def test_online_dpo_gets_the_rounds_reward_model_and_refuses_a_user_set_one(tmp_path):
    online = PipelineConfig(dpo={"online": {"enabled": True}})
    assert online.dpo_online() and not PipelineConfig().dpo_online()
    cfg = online.stage_config("dpo", {"model.name_or_path": "tiny", "data.path": str(tmp_path),
                                      "online.reward_model": "runs/rm/r1-x"}, 1)
    assert cfg.online.enabled and cfg.online.reward_model == "runs/rm/r1-x"
    with pytest.raises(ValueError, match="dpo.online.reward_model is set by the pipeline"):
        PipelineConfig(dpo={"online": {"enabled": True, "reward_model": "mine"}})


def test_without_the_sft_stage_the_round_starts_from_the_named_model_as_it_is(tmp_path, capsys):
    from rlhf.models.tiny import tiny_model_path
    from rlhf.stages.pipeline import _Clock, _starting_policy

    cfg = load_config(QUICKSTART, [f"run.root={tmp_path}", "sft_stage=false", "sft.model.tiny.hidden_size=64"])
    name, folder = _starting_policy(cfg, _Clock(), None)
    assert name == "base"
    assert folder == tiny_model_path(cfg.stage_config("sft", {}, 1).model.tiny)
    assert (folder / "config.json").is_file()
    assert not (tmp_path / "sft").exists(), "the SFT stage ran although sft_stage is false"
    assert "no SFT stage" in capsys.readouterr().out


def test_rounds_without_new_prompts_are_refused_before_any_training(tmp_path, monkeypatch):
    from rlhf.core.errors import UserError
    from rlhf.stages import pipeline

    def training_started(*_):
        raise AssertionError("the round started training although its rounds could not be fed")

    monkeypatch.setattr(pipeline, "_starting_policy", training_started)
    # The quickstart answers all of its 669 training prompts in round 1, so a second round would find none.
    cfg = load_config(QUICKSTART, [f"run.root={tmp_path}", "rounds=2"])
    with pytest.raises(UserError, match=r"rounds=2 needs more than 800 training prompts .* prepare kept 669; "
                                        r"set generate.prompts.limit=334"):
        pipeline.run_pipeline(cfg)
    prepared = next((tmp_path / "prepare").glob("r1-*"))
    pipeline._check_prompts_for_rounds(load_config(QUICKSTART, ["rounds=2", "generate.prompts.limit=334"]), prepared)
