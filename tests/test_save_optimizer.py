"""save_optimizer: which checkpoint directories keep the optimizer state (all, latest, none)."""

import logging
import os

import pytest
import torch

from training.runtime import trainer_state
from training.runtime import checkpoint as ckpt
from training.config import TrainingConfig
from training.errors import UserError

from test_trainer import make_trainer

FILES = (ckpt.GENERATOR_FILE, ckpt.DISCRIMINATOR_FILE)



def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _holds_optimizer(directory) -> dict:
    """{file: whether it holds optimizer state}, asserting the key is there either way."""
    held = {}
    for name in FILES:
        saved = _load(os.path.join(directory, name))
        assert "optimizer_state_dict" in saved, (directory, name)
        held[name] = bool(saved["optimizer_state_dict"])
    return held


def _pt_files(root):
    return sorted(os.path.join(d, f) for d, _, files in os.walk(root) for f in files if f.endswith(".pt"))


def _same_inode(a, b):
    return os.stat(a).st_ino == os.stat(b).st_ino


def _stage_1_is_best(monkeypatch):
    """best/ = stage_1 whatever the rewards: the first stage scores 1, later ones 0."""
    scores = iter([1.0, 0.0, 0.0, 0.0, 0.0])
    monkeypatch.setattr(trainer_state, "best_metric", lambda metrics, name: next(scores))


def test_save_optimizer_is_validated():
    with pytest.raises(UserError, match="save_optimizer must be all, latest or none, got 'some'"):
        TrainingConfig(save_optimizer="some")
    assert TrainingConfig().save_optimizer == "all"
    assert TrainingConfig.from_yaml("configs/qwen2.5-coder-1.5b.yaml").save_optimizer == "latest"


def test_all_keeps_optimizer_state_everywhere(tmp_path, sandbox, problems):
    trainer = make_trainer(tmp_path, sandbox, "--stages=[1, 5]")
    trainer.train(problems)
    for name in ("warmup", "stage_1", "stage_5", "best", "final"):
        assert _holds_optimizer(tmp_path / name) == {f: True for f in FILES}, name


def test_latest_keeps_it_in_the_newest_stage_and_final_only(tmp_path, sandbox, problems, monkeypatch):
    _stage_1_is_best(monkeypatch)  # best/ is not the newest stage: the case where it could keep a stale copy
    trainer = make_trainer(tmp_path, sandbox, "--stages=[1, 5]", "--save_optimizer=latest")
    trainer.train(problems)
    for name in ("warmup", "stage_1", "best"):
        assert _holds_optimizer(tmp_path / name) == {f: False for f in FILES}, name
    for name in ("stage_5", "final"):
        assert _holds_optimizer(tmp_path / name) == {f: True for f in FILES}, name
    assert not any(".tmp-" in p for p in _pt_files(tmp_path))
    for f in FILES:
        # best/ links to the rewritten stage_1 files, final/ to stage_5's: no second copy of any bytes
        assert _same_inode(tmp_path / "best" / f, tmp_path / "stage_1" / f), f
        assert _same_inode(tmp_path / "final" / f, tmp_path / "stage_5" / f), f
    # the weights are untouched by the rewrite, and best/ and final/ load
    best = make_trainer(tmp_path, sandbox)
    best.load_checkpoint(str(tmp_path / "best"), load_optimizer=False)
    assert best.completed_stage == 1
    stage_1 = _load(tmp_path / "stage_1" / ckpt.GENERATOR_FILE)["model_state_dict"]
    for name, tensor in best.generator.model.state_dict().items():
        assert torch.equal(tensor, stage_1[name]), name
    final = make_trainer(tmp_path, sandbox)
    final.load_checkpoint(str(tmp_path / "final"))
    assert final.completed_stage == 5
    assert final.generator_optimizer.state and final.discriminator_optimizer.state
    for name, tensor in final.generator.model.state_dict().items():
        assert torch.equal(tensor, trainer.generator.model.state_dict()[name]), name


def test_latest_drops_nothing_before_the_newer_directory_is_complete(tmp_path, sandbox, problems, monkeypatch):
    original = ckpt.drop_optimizer_state

    def killed(root, keep):
        assert os.path.isfile(os.path.join(keep, ckpt.METRICS_FILE))  # called only once the directory is complete
        if os.path.basename(keep) == "stage_2":
            raise KeyboardInterrupt  # the process dies between stage_2/'s write and the dropping
        return original(root, keep)

    monkeypatch.setattr(ckpt, "drop_optimizer_state", killed)
    trainer = make_trainer(tmp_path, sandbox, "--stages=[1, 2, 3]", "--warmup.enabled=false", "--save_optimizer=latest")
    with pytest.raises(KeyboardInterrupt):
        trainer.train(problems)
    assert _holds_optimizer(tmp_path / "stage_1") == {f: True for f in FILES}  # not dropped yet
    assert _holds_optimizer(tmp_path / "stage_2") == {f: True for f in FILES}
    monkeypatch.setattr(ckpt, "drop_optimizer_state", original)

    resumed = make_trainer(tmp_path, sandbox, "--stages=[1, 2, 3]", "--warmup.enabled=false", "--save_optimizer=latest")
    resumed.load_checkpoint(str(tmp_path / "stage_2"))
    assert resumed.completed_stage == 2 and resumed.generator_optimizer.state
    resumed.train(problems)
    for name, held in (("stage_1", False), ("stage_2", False), ("stage_3", True), ("final", True)):
        assert _holds_optimizer(tmp_path / name) == {f: held for f in FILES}, name


def test_latest_killed_in_the_middle_of_dropping_leaves_both_directories_loadable(tmp_path, sandbox, problems, monkeypatch):
    original = ckpt.strip_optimizer_file
    calls = []

    def killed_after_one(path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # one file of stage_1/ rewritten, the other not
        return original(path)

    trainer = make_trainer(tmp_path, sandbox, "--stages=[1, 2]", "--warmup.enabled=false", "--save_optimizer=latest")
    trainer.train_stage(1, problems)
    monkeypatch.setattr(ckpt, "strip_optimizer_file", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        trainer.train_stage(2, problems)
    assert _holds_optimizer(tmp_path / "stage_1") == {ckpt.GENERATOR_FILE: False, ckpt.DISCRIMINATOR_FILE: True}
    assert _holds_optimizer(tmp_path / "stage_2") == {f: True for f in FILES}
    for name in ("stage_1", "stage_2"):
        make_trainer(tmp_path, sandbox).load_checkpoint(str(tmp_path / name))


def test_clean_stale_removes_a_half_written_file_rewrite(tmp_path):
    (tmp_path / "stage_1").mkdir()
    (tmp_path / "stage_1" / "generator.pt").write_bytes(b"x")
    (tmp_path / "stage_1" / ".generator.pt.tmp-abc").write_bytes(b"half")
    ckpt.clean_stale(str(tmp_path))
    assert os.listdir(tmp_path / "stage_1") == ["generator.pt"]


def test_none_writes_no_optimizer_state(tmp_path, sandbox, problems):
    trainer = make_trainer(tmp_path, sandbox, "--stages=[1]", "--save_optimizer=none")
    trainer.train(problems)
    files = _pt_files(tmp_path)
    assert len(files) == 8  # warmup, stage_1, best, final
    for path in files:
        saved = _load(path)
        assert saved["optimizer_state_dict"] == {}, path
        assert saved["model_state_dict"], path


def test_resume_without_optimizer_state_warns_once_and_trains(tmp_path, sandbox, problems, caplog):
    trainer = make_trainer(tmp_path, sandbox, "--stages=[1, 2]", "--warmup.enabled=false", "--save_optimizer=none")
    trainer.train_stage(1, problems)

    resumed = make_trainer(tmp_path, sandbox, "--stages=[1, 2]", "--warmup.enabled=false")
    with caplog.at_level(logging.WARNING):
        resumed.load_checkpoint(str(tmp_path / "stage_1"), load_optimizer=True)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("training")]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    assert "no optimizer state" in warnings[0].getMessage() and "fresh optimizer" in warnings[0].getMessage()
    assert resumed.completed_stage == 1
    assert not resumed.generator_optimizer.state and not resumed.discriminator_optimizer.state
    saved = _load(tmp_path / "stage_1" / ckpt.GENERATOR_FILE)["model_state_dict"]
    for name, tensor in resumed.generator.model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    before_g = {n: p.detach().clone() for n, p in resumed.generator.model.named_parameters()}
    resumed.train(problems)
    assert (tmp_path / "stage_2" / ckpt.GENERATOR_FILE).is_file()
    assert resumed.generator_optimizer.state  # the fresh optimizer stepped
    assert any(not torch.equal(before_g[n], p.detach()) for n, p in resumed.generator.model.named_parameters())
