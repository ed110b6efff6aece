"""Training: batching and loss (pure), a smoke run, checkpoint/resume, the CLIs, the quick toy build."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from mcts.envs.shipping import folder_hashes  # noqa: E402
from mcts.policy.base import Prefix  # noqa: E402
from prm import toy  # noqa: E402
from prm.eval import main as eval_main  # noqa: E402
from prm.model import IGNORE_INDEX, PRM  # noqa: E402
from prm.rows import batch_order, collate, encode_step_rows, masked_loss  # noqa: E402
from prm.toy import FULL_BUILD, STAGE1_BUILD, _rows, ensure_toy_pprm, ensure_toy_prm, toy_cache_dir  # noqa: E402
from prm.toy_training import AuxLMLoss, dense_labels, grow_backbone, lm_labels  # noqa: E402
from prm.toy_traces import ToyDataConfig, toy_step_records  # noqa: E402
from prm.train import TrainConfig, TrainError, main, train_rows  # noqa: E402


# ---------------------------------------------------------------------------------------------------
# Pure parts


def test_batch_order_covers_every_row_once_per_epoch_grouped_by_length():
    lengths = [(i * 37) % 101 for i in range(300)]
    batches = batch_order(lengths, batch_size=8, epochs=2, seed=0, pool_batches=10)
    per_epoch = len(batches) // 2
    for epoch in range(2):
        seen = sorted(i for b in batches[epoch * per_epoch:(epoch + 1) * per_epoch] for i in b)
        assert seen == list(range(300))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 25  # random batches of 8 from 0..100 spread ~ 78
    assert batch_order(lengths, 8, 2, seed=0, pool_batches=10) == batches
    assert batch_order(lengths, 8, 2, seed=1, pool_batches=10) != batches
    half = batch_order(lengths, 8, 1.5, seed=0, pool_batches=10)
    assert len(half) == per_epoch + round(per_epoch / 2)


def test_collate_pads_right_and_masks_labels():
    rows = [{"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, IGNORE_INDEX, 1.0]},
            {"input_ids": [5], "labels": [0.0]}]
    batch = collate(rows, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 1.0], [0.0, IGNORE_INDEX, IGNORE_INDEX]]


def test_masked_loss_sees_only_labelled_positions():
    labels = torch.tensor([[IGNORE_INDEX, 1.0, IGNORE_INDEX], [0.0, IGNORE_INDEX, IGNORE_INDEX]])
    logits = torch.tensor([[5.0, 0.0, -3.0], [0.0, 9.0, 9.0]], requires_grad=True)
    bce = masked_loss(logits, labels, "bce")
    assert bce.item() == pytest.approx(torch.log(torch.tensor(2.0)).item())  # both logits 0
    bce.backward()
    assert logits.grad[0, 0] == 0 and logits.grad[0, 2] == 0 and logits.grad[1, 1:].abs().sum() == 0
    other = logits.detach().clone()
    other[0, 0], other[1, 2] = -50.0, 50.0  # unlabelled positions
    assert masked_loss(other, labels, "bce").item() == pytest.approx(bce.item())
    assert masked_loss(logits.detach(), labels, "mse").item() == pytest.approx(0.25)  # sigmoid 0.5 vs 1, 0
    nothing = torch.full((1, 2), IGNORE_INDEX)
    assert masked_loss(torch.zeros(1, 2, requires_grad=True), nothing, "bce").item() == 0.0


def test_per_position_weights():
    rows = [{"input_ids": [5, 6], "labels": [1.0, 0.0], "weights": [3.0, 1.0]}, {"input_ids": [5], "labels": [1.0]}]
    batch = collate(rows, pad_id=0)
    assert batch["weights"].tolist() == [[3.0, 1.0], [1.0, 0.0]]  # a row without weights: 1 where labelled
    logits = torch.tensor([[0.0, 0.0], [2.0, -7.0]])
    per = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([0.0, 0.0, 2.0]), torch.tensor([1.0, 0.0, 1.0]), reduction="none")
    expected = (3 * per[0] + per[1] + per[2]) / 5
    assert masked_loss(logits, batch["labels"], "bce", batch["weights"]).item() == pytest.approx(expected.item())
    assert "weights" not in collate(rows[1:], pad_id=0)


def test_train_config_validation():
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="hinge")
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="warmup_ratio"):
        TrainConfig(warmup_ratio=1.0)


# ---------------------------------------------------------------------------------------------------
# With a tiny random model


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory, random_llama):
    folder = tmp_path_factory.mktemp("backbone")
    random_llama(512, 1, folder)
    return folder


@pytest.fixture(scope="module")
def records():
    return toy_step_records(ToyDataConfig(problems=60, samples=1, slip_rates=(0.3,), max_ops=3, seed=5))


FAST = TrainConfig(epochs=4, batch_size=16, lr=3e-3, head_lr=3e-2, warmup_ratio=0.1, num_threads=1, device="cpu")


def test_training_reduces_the_loss_and_changes_parameters(backbone_dir, records):
    model = PRM.from_backbone(backbone_dir, device="cpu")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows = encode_step_rows(model, records, target="labels", mode="prm")
    info = train_rows(model, rows, FAST, loss="bce", pad_id=model.pad_id, progress=False)
    assert info["steps"] == 16 and info["rows"] == 60
    assert info["final_loss"] < info["first_loss"]
    changed = [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]
    assert "head.weight" in changed and any(n.startswith("backbone.") for n in changed)
    assert not model.training
    assert all(0 <= v <= 1 for v in model.score_traces([Prefix(records[0]["problem"], tuple(records[0]["steps"]))])[0])


def test_resume_from_a_checkpoint_reproduces_the_uninterrupted_run(backbone_dir, records, tmp_path):
    config = dataclasses.replace(FAST, epochs=1, max_steps=4, save_every=2)

    def fresh():
        model = PRM.from_backbone(backbone_dir, device="cpu", seed=1)
        return model, encode_step_rows(model, records, target="values", mode="prm")

    whole, rows = fresh()
    info = train_rows(whole, rows, config, loss="mse", pad_id=whole.pad_id, checkpoint_dir=tmp_path / "ck",
                      progress=False)
    assert info["steps"] == 4
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["step-2", "step-4"]
    import shutil

    shutil.rmtree(tmp_path / "ck" / "step-4")  # as if the run had died after step 2
    resumed, rows = fresh()
    info = train_rows(resumed, rows, config, loss="mse", pad_id=resumed.pad_id, checkpoint_dir=tmp_path / "ck",
                      resume=True, progress=False)
    assert info["steps"] == 4
    for (n, a), (_, b) in zip(whole.named_parameters(), resumed.named_parameters()):
        assert torch.allclose(a, b, atol=1e-6), n
    other = dataclasses.replace(config, batch_size=8)
    with pytest.raises(TrainError, match="other data or settings"):
        train_rows(fresh()[0], rows, other, loss="mse", pad_id=0, checkpoint_dir=tmp_path / "ck", resume=True,
                   progress=False)


# ---------------------------------------------------------------------------------------------------
# Command lines


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_train_and_eval_cli(backbone_dir, records, tmp_path, capsys):
    data = _write(tmp_path / "train.jsonl", records[:40])
    held = _write(tmp_path / "held.jsonl", records[40:])
    out = tmp_path / "prm-out"
    args = ["--data", str(data), "--backbone", str(backbone_dir), "--out", str(out), "--epochs", "1",
            "--batch-size", "8", "--lr", "1e-3", "--num-threads", "1", "--device", "cpu", "--no-progress",
            "--eval-data", str(held), "--save-every", "2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "eval step_auc" in printed and "final loss" in printed
    assert (out / "prm_config.json").is_file() and (out / "train_info.json").is_file()
    assert not (tmp_path / "prm-out.checkpoints").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folders left
    info = json.loads((out / "train_info.json").read_text())
    assert info["target"] == "labels" and info["training"]["loss"] == "bce" and info["training"]["steps"] == 5

    assert main(args) == 2  # --out exists
    assert "--overwrite" in capsys.readouterr().err

    assert eval_main(["--data", str(held), "--prm", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["traces"] == 20 and 0 <= result["step_auc"] <= 1 and 0 <= result["first_error_acc"] <= 1

    # a saved PRM goes on training (its head kept); an ORM on soft values
    orm_out = tmp_path / "orm-out"
    assert main(["--data", str(data), "--backbone", str(out), "--out", str(orm_out), "--kind", "orm",
                 "--target", "values", "--epochs", "1", "--batch-size", "8", "--no-progress", "--device", "cpu"]) == 0
    orm = json.loads((orm_out / "prm_config.json").read_text())
    assert orm["mode"] == "orm" and json.loads((orm_out / "train_info.json").read_text())["training"]["loss"] == "mse"


def test_bad_data_exits_2_and_writes_nothing(backbone_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "1 + 1", "steps": ["a", "b"], "labels": [1]}) + "\n")
    out = tmp_path / "never"
    assert main(["--data", str(bad), "--backbone", str(backbone_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:1: field 'labels': 1 labels for 2 steps" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]
    assert main(["--data", str(tmp_path / "missing.jsonl"), "--backbone", str(backbone_dir),
                 "--out", str(out)]) == 2
    good = _write(tmp_path / "good.jsonl", [{"problem": "1 + 1", "steps": ["a"], "labels": [1]}])
    capsys.readouterr()
    assert main(["--data", str(good), "--backbone", str(tmp_path / "nobackbone"), "--out", str(out)]) == 2
    assert "nobackbone" in capsys.readouterr().err and not out.exists()


def test_the_toy_models_are_built_by_prm_toy_only(tmp_path, capsys):
    out = tmp_path / "toy-prm"
    assert main(["--toy", "--quick", "--out", str(out)]) == 2  # prm.train trains on data files only
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "python -m prm.toy build" in err and not out.exists()
    assert toy.main(["build", "--quick", "--out", str(out), "--no-progress", "--max-steps", "2",
                     "--num-threads", "1"]) == 0
    assert "final loss" in capsys.readouterr().out
    info = json.loads((out / "train_info.json").read_text())
    assert info["format_version"] == toy.FORMAT_VERSION and info["training"]["steps"] == 2
    assert info["build"]["train"] == {**dataclasses.asdict(toy.QUICK_BUILD.train), "max_steps": 2, "num_threads": 1}


def test_quick_toy_build_is_cached_and_evaluates(tmp_path, capsys):
    folder = ensure_toy_prm(tmp_path, quick=True, progress=False)
    assert folder == toy_cache_dir("prm", True, tmp_path)
    stamp = (folder / "train_info.json").stat().st_mtime_ns
    assert ensure_toy_prm(tmp_path, quick=True) == folder
    assert (folder / "train_info.json").stat().st_mtime_ns == stamp  # not rebuilt
    prm = PRM.from_pretrained(folder, device="cpu")
    assert 0 <= prm.score([Prefix("1 + 2")], ["1 + 2 = 3, so 3\n"])[0] <= 1
    pfolder = ensure_toy_pprm(tmp_path, quick=True, progress=False)
    capsys.readouterr()
    assert eval_main(["--prm", str(folder), "--pprm", str(pfolder), "--toy", "40", "--seed", "3", "--json",
                      "--slip-rate", "0.3"]) == 0
    result = json.loads(capsys.readouterr().out.strip())
    assert {"step_auc", "first_error_acc", "pairwise_acc"} <= set(result)
    assert result["traces"] == 40


# ---------------------------------------------------------------------------------------------------
# The toy build's training aids (prm.toy_training): dense labels, next-token targets, a grown backbone


def test_dense_labels_flip_at_the_first_character_that_leaves_the_canonical_step():
    problem = "3 + 4 * 2"
    wrong = ["4 * 2 = 9, so 3 + 9\n", "3 + 9 = 12, so 12\n", "The answer is \\boxed{12}.\n"]
    head = len(problem) + 2  # <bos>, the problem, its newline: one token per character
    ends, at = [], head - 1
    for s in wrong:
        at += len(s)
        ends.append(at)
    labels, weights = dense_labels(problem, wrong, [0, 0, 0], ends, ends[-1] + 1, 0.3)
    first = labels[head:ends[0] + 1]
    assert first == [1.0] * 8 + [0.0] * (len(wrong[0]) - 8)  # "4 * 2 = " agrees, "9" does not
    assert set(labels[ends[0] + 1:]) == {0.0}  # everything after a wrong step
    assert labels[:head] == [IGNORE_INDEX] * head and weights[:head] == [0.0] * head
    assert [weights[e] for e in ends] == [1.0] * 3 and weights[head] == 0.3
    right = ["4 * 2 = 8, so 3 + 8\n", "3 + 8 = 11, so 11\n", "The answer is \\boxed{11}.\n"]
    labels, _ = dense_labels(problem, right, [1, 1, 1], ends, ends[-1] + 1, 0.3)
    assert set(labels[head:]) == {1.0}
    ids = list(range(ends[-1] + 1))
    lm = lm_labels(ids, [1, 0, 0], ends, wrong, "\n")
    assert lm[head - 1:ends[0]] == ids[head:ends[0] + 1] and set(lm[ends[0]:]) == {-100}
    assert lm[:head - 1] == [-100] * (head - 1)


def test_grown_backbone_starts_as_the_original_and_trains_with_the_next_token_loss(backbone_dir, records):
    model = PRM.from_backbone(backbone_dir, device="cpu")
    prefixes = [Prefix(r["problem"], tuple(r["steps"])) for r in records[:4]]
    before = model.score_traces(prefixes)
    grow_backbone(model, 2, seed=0)
    assert model.backbone.config.num_hidden_layers == 3
    after = model.score_traces(prefixes)
    assert all(a == pytest.approx(b, abs=1e-6) for x, y in zip(before, after) for a, b in zip(x, y))
    rows = _rows(model, records, dataclasses.replace(FULL_BUILD, dense_weight=0.3, lm_weight=1.0))
    assert all("weights" in r and "lm_labels" in r for r in rows)
    old = {n: p.detach().clone() for n, p in model.named_parameters()}
    info = train_rows(model, rows, dataclasses.replace(FAST, epochs=2), loss="bce", pad_id=model.pad_id,
                      progress=False, loss_fn=AuxLMLoss("bce", 1.0, layer=1))
    assert info["final_loss"] < info["first_loss"]
    new = dict(model.named_parameters())
    assert not torch.equal(old["backbone.layers.2.mlp.down_proj.weight"], new["backbone.layers.2.mlp.down_proj.weight"])


# ---------------------------------------------------------------------------------------------------
# The toy PRM and PPRM shipped in the package (python -m prm.toy build --ship [--pprm])


@pytest.mark.parametrize("kind", ["prm", "pprm"])
def test_the_shipped_toy_models_are_the_full_builds_intact(kind):
    folder = toy.SHIPPED[kind]
    assert toy.check_toy_folder(folder, kind) == []  # record, sha256 of every file, the code's full build
    assert toy.shipped_toy(kind) == folder
    assert (ensure_toy_prm if kind == "prm" else ensure_toy_pprm)(progress=False) == folder  # nothing to train
    info = json.loads((folder / "train_info.json").read_text())
    assert info["storage_dtype"] == "float16" and "+git." in info["code_version"]
    assert sum(p.stat().st_size for p in folder.iterdir()) < 4 * 2 ** 20


def test_the_shipped_first_stage_is_the_base_the_shipped_prm_continued():
    assert toy.check_base_folder(toy.SHIPPED_BASE, STAGE1_BUILD) == []
    info = json.loads((toy.SHIPPED["prm"] / "train_info.json").read_text())
    assert info["build"]["base"] == json.loads(json.dumps(dataclasses.asdict(STAGE1_BUILD)))
    assert info["data"]["base"]["files"] == folder_hashes(toy.SHIPPED_BASE, "train_info.json")
    assert toy._base_folder(STAGE1_BUILD, None, None, progress=False) == toy.SHIPPED_BASE  # nothing to rebuild


def test_the_shipped_prm_was_built_on_the_shipped_policy():
    """Its second stage trained on the shipped policy's traces and measured its figures on them; a
    new shipped policy without a PRM rebuild would leave it scoring another policy's mistakes."""
    from mcts.envs import tiny_models

    info = json.loads((toy.SHIPPED["prm"] / "train_info.json").read_text())
    assert info["data"]["policy"]["files"] == tiny_models.folder_hashes(tiny_models.SHIPPED_DIR)


def test_a_changed_shipped_file_or_build_is_not_the_shipped_model(tmp_path):
    import shutil

    folder = tmp_path / "toy-prm"
    shutil.copytree(toy.SHIPPED["prm"], folder)
    assert toy.check_toy_folder(folder, "prm") == []
    (folder / "head.safetensors").write_bytes(b"not the head")
    record = json.loads((folder / "train_info.json").read_text())
    record["build"]["train"]["max_steps"] = 1
    (folder / "train_info.json").write_text(json.dumps(record))
    problems = toy.check_toy_folder(folder, "prm")
    assert any("head.safetensors: sha256" in p for p in problems)
    assert any("the recorded build is not the code's build config" in p for p in problems)


def test_the_shipped_prm_scores_its_policys_own_traces():
    """From its record: held-out step AUC on traces sampled (T=1) from the shipped policy on fresh
    1-4 operation problems, the traces that a search with that policy scores. #16 asks for 0.95;
    the format-8 build records 0.967 (first-error accuracy 0.861; format 7 on the previous policy's
    traces: 0.963 / 0.909), and on the scripted traces 0.992. The slow test below re-measures it."""
    info = json.loads((toy.SHIPPED["prm"] / "train_info.json").read_text())
    assert info["build"]["eval_policy_traces"] == 1000
    assert info["eval"]["policy_step_auc"] >= 0.95 and info["eval"]["step_auc"] >= 0.98, info["eval"]
    assert info["eval"]["policy_first_error_acc"] >= 0.85, info["eval"]


@pytest.mark.slow
def test_the_shipped_prm_still_measures_what_its_record_says():
    import dataclasses as dc

    info = json.loads((toy.SHIPPED["prm"] / "train_info.json").read_text())
    prm = PRM.from_pretrained(toy.SHIPPED["prm"], device="cpu")
    assert str(next(prm.parameters()).dtype) == "torch.float32"  # float16 on disk, float32 here
    from prm.metrics import step_metrics

    records = toy.eval_policy_records(dc.replace(toy.FULL_BUILD, eval_policy_traces=300))
    auc = step_metrics(prm, records)["step_auc"]
    assert abs(auc - info["eval"]["policy_step_auc"]) <= 0.03, (auc, info["eval"]["policy_step_auc"])


def test_training_problems_cover_every_problem_a_build_trains_on():
    """The held-out split of benchmarks/prm_heldout.py rests on this set: it must hold the problem of
    every training record (drawn problems, their solution states and the one-step facts)."""
    build = dataclasses.replace(STAGE1_BUILD, problems=10, fact_problems=40, single_problems=40, branch_problems=10,
                                policy_problems=3, policy_focus_problems=4, policy_focus_samples=2)
    seen = toy.training_problems(build)
    records = toy._training_records(build)
    assert {r["problem"] for r in records} <= seen
    focused = records[-8:]  # the focused draw comes last: 4 problems of 3-4 operations, 2 traces each
    assert all(3 <= len(r["problem"].split()) // 2 <= 4 for r in focused)
    assert len({r["problem"] for r in focused}) == 4
    # adding the focused draw leaves the records before it as they were
    without = toy._training_records(dataclasses.replace(build, policy_focus_problems=0))
    assert without == records[:-8]
    fresh = toy.toy_problems(200, 987654, 3, 4, 10, 100)  # 3-4 operations: almost never drawn twice
    assert sum(p["problem"] in seen for p in fresh) <= 2
    # a second stage has trained on its base's problems too
    second = dataclasses.replace(build, init="prm", base=build, data_seed=2, dense_weight=0.0, lm_weight=0.0,
                                 extra_layers=0, branch_operand_fraction=0.5, branch_copy_fraction=0.9)
    assert toy.training_problems(second) >= seen | {r["problem"] for r in toy._training_records(second)}


def _quick_second_stage(base=toy.QUICK_BUILD):
    return dataclasses.replace(toy.QUICK_BUILD, init="prm", base=base, problems=20, branch_problems=40,
                               branch_operand_fraction=0.5, branch_copy_fraction=0.9, data_seed=2,
                               train=dataclasses.replace(toy.QUICK_BUILD.train, max_steps=3))


def test_a_second_stage_continues_its_base_folder_checked_against_its_record(tmp_path, capsys):
    base = tmp_path / "base"
    assert toy.main(["build", "--quick", "--out", str(base), "--no-progress"]) == 0
    build = _quick_second_stage()
    out = toy.build_toy_prm(tmp_path / "second", build, progress=False, base_dir=base)
    info = json.loads((out / "train_info.json").read_text())
    assert info["build"]["base"] == json.loads(json.dumps(dataclasses.asdict(toy.QUICK_BUILD)))
    assert info["data"]["base"]["files"] == folder_hashes(base, "train_info.json")
    started = PRM.from_pretrained(base, device="cpu").state_dict()
    trained = PRM.from_pretrained(out, device="cpu").state_dict()
    assert started.keys() == trained.keys() and any(not torch.equal(started[k], trained[k]) for k in started)
    # a folder of another build, or one whose files changed, is refused before any training
    other = _quick_second_stage(dataclasses.replace(toy.QUICK_BUILD, data_seed=5))
    with pytest.raises(ValueError, match="not the base build: .*recorded build is not the base build"):
        toy.build_toy_prm(tmp_path / "never", other, progress=False, base_dir=base)
    (base / "head.safetensors").write_bytes(b"changed")
    with pytest.raises(ValueError, match="head.safetensors: sha256"):
        toy.build_toy_prm(tmp_path / "never", build, progress=False, base_dir=base)
    assert not (tmp_path / "never").exists()
    capsys.readouterr()
    assert toy.main(["build", "--quick", "--out", str(tmp_path / "never"), "--init", "prm", "--no-progress"]) == 2
    assert "continues a base build" in capsys.readouterr().err  # the quick build has no base


def test_a_second_stage_builds_its_base_into_the_cache_once(tmp_path):
    build = _quick_second_stage()
    toy.build_toy_prm(tmp_path / "a", build, progress=False, cache_dir=tmp_path)
    base = tmp_path / f"toy-prm-base-v{toy.FORMAT_VERSION}"
    assert toy.check_base_folder(base, toy.QUICK_BUILD) == []
    assert json.loads((base / "train_info.json").read_text())["storage_dtype"] == "float16"
    stamp = (base / "train_info.json").stat().st_mtime_ns
    toy.build_toy_prm(tmp_path / "b", build, progress=False, cache_dir=tmp_path)
    assert (base / "train_info.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    a, b = (PRM.from_pretrained(tmp_path / x, device="cpu").state_dict() for x in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same base and seeds: the same weights


def test_an_older_record_without_todays_fields_still_names_its_build(tmp_path):
    """The format-6 PRM recorded its build before ToyBuild had `base` and the branch-slip fields;
    their defaults reproduce what that code did, so the record still names STAGE1_BUILD."""
    import shutil

    base = tmp_path / "base"
    assert toy.main(["build", "--quick", "--out", str(base), "--no-progress", "--max-steps", "1"]) == 0
    record = json.loads((base / "train_info.json").read_text())
    for key in ("base", "branch_wrong_fraction", "branch_slip_rate", "branch_operand_fraction",
                "branch_copy_fraction", "branch_copy_context_fraction"):
        del record["build"][key]
    record["format_version"] = 6
    (base / "train_info.json").write_text(json.dumps(record))
    quick = dataclasses.replace(toy.QUICK_BUILD, train=dataclasses.replace(toy.QUICK_BUILD.train, max_steps=1))
    assert toy.check_base_folder(base, quick) == []
    assert toy.check_base_folder(base, dataclasses.replace(quick, branch_operand_fraction=0.5)) != []
    shutil.rmtree(base)
    assert "missing" in toy.check_base_folder(base, quick)[0]


def test_build_chains_are_validated():
    from prm import toy_config
    from prm.train import TRAIN_INFO

    assert toy_config.RECORD_FILE == TRAIN_INFO
    assert FULL_BUILD.base == STAGE1_BUILD and FULL_BUILD.policy_init() == STAGE1_BUILD
    assert FULL_BUILD.policy_depth(5) == 3  # the policy's 3 blocks under stage 1's 2 grown ones
    with pytest.raises(ValueError, match="needs init='prm'"):
        dataclasses.replace(toy.QUICK_BUILD, base=toy.QUICK_BUILD)
    with pytest.raises(ValueError, match="lm_weight needs a policy-initialised backbone"):
        dataclasses.replace(toy.QUICK_BUILD, init="prm", base=toy.QUICK_BUILD, lm_weight=1.0)
    with pytest.raises(ValueError, match="extra_layers needs init='policy'"):
        dataclasses.replace(FULL_BUILD, extra_layers=1)
    with pytest.raises(ValueError, match="branch_operand_fraction"):
        dataclasses.replace(FULL_BUILD, branch_operand_fraction=1.5)


def test_prm_heldout_benchmark_splits_by_operations_and_training_overlap(capsys):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "prm_heldout.py")
    spec = importlib.util.spec_from_file_location("prm_heldout", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.count_ops("(1 + 2) * 3 - 4") == 3 and bench.count_ops("7") == 0
    assert bench.main(["--traces", "24", "--bootstrap", "20", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| all | all | 24 |" in out and "in training" in out and "step AUC" in out
