import os

import pytest
import torch

from training.runtime import checkpoint as ckpt
from training.errors import UserError


def test_atomic_write_replaces_and_leaves_no_temporaries(tmp_path):
    target = tmp_path / "stage_1"
    ckpt.write_dir_atomically(str(target), lambda d: open(os.path.join(d, "a"), "w").write("1"))
    ckpt.write_dir_atomically(str(target), lambda d: open(os.path.join(d, "b"), "w").write("2"))
    assert sorted(os.listdir(target)) == ["b"]
    assert sorted(os.listdir(tmp_path)) == ["stage_1"]


def test_failed_write_leaves_previous_directory_intact(tmp_path):
    target = tmp_path / "stage_1"
    ckpt.write_dir_atomically(str(target), lambda d: open(os.path.join(d, "a"), "w").write("1"))

    def boom(d):
        open(os.path.join(d, "half"), "w").write("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        ckpt.write_dir_atomically(str(target), boom)
    assert os.listdir(target) == ["a"]
    assert sorted(os.listdir(tmp_path)) == ["stage_1"]


def test_best_is_hard_linked_not_copied(tmp_path):
    src = tmp_path / "stage_2"
    src.mkdir()
    (src / "generator.pt").write_bytes(b"x" * 1000)
    ckpt.link_or_copy_dir(str(src), str(tmp_path / "best"))
    a, b = os.stat(src / "generator.pt"), os.stat(tmp_path / "best" / "generator.pt")
    assert (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)


def test_clean_stale_removes_leftovers_of_a_killed_run(tmp_path):
    (tmp_path / ".stage_3.tmp-abc").mkdir()
    (tmp_path / "best.old").mkdir()
    (tmp_path / "stage_1").mkdir()
    ckpt.clean_stale(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["stage_1"]


def test_load_rejects_missing_corrupted_and_foreign_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ckpt.load_torch(str(tmp_path / "nope.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="unreadable or corrupted"):
        ckpt.load_torch(str(bad))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(UserError, match="model_state_dict"):
        ckpt.load_torch(str(foreign))


def test_missing_checkpoint_message_lists_existing_ones(tmp_path):
    for name in ("stage_1", "final"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "generator.pt").write_bytes(b"")
    message = ckpt.missing_checkpoint_message(str(tmp_path / "best"))
    assert "stage_1" in message and "final" in message and "try final" in message
