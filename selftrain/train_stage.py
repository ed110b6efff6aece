"""The training stages of a run (policy SFT, PRM / ORM / PPRM / value model), in this process or,
when more than one GPU is present, through `accelerate launch` (one process per GPU, data
parallel; `prm.train.train_rows` runs on accelerate either way).

    TrainJob(kind, start, records, ...)   one stage's training: "sft" | "prm" | "orm" | "pprm"
    run_training(job, folder)            runs it, writing the model to `folder`
    python -m selftrain.train_stage JOB.json    what `accelerate launch` runs (`TrainJob.to_json`)

TREESEARCH_TRAIN_LAUNCH=accelerate forces the launched path (e.g. to try it on one CPU);
=inprocess forces the in-process one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:  # annotations only: importing them loads torch and accelerate
    from prm.train import TrainConfig
    from selftrain.sft import SFTConfig

__all__ = ["JOB_KINDS", "TrainJob", "launch_mode", "run_training", "train_scorer_model"]

LAUNCH_ENV = "TREESEARCH_TRAIN_LAUNCH"
JOB_KINDS = ("sft", "prm", "orm", "pprm")


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """One training stage's work, the same object in this process and (as JSON) in the processes
    `accelerate launch` starts.

    kind: "sft" (the policy, on solution records, with `sft`) or "prm" | "orm" | "pprm" (a scorer,
        on step records' `target` or on pairs, with `train`); start: the model folder it starts from;
    records: its training data; seed: the stage's seed; preset: the policy family's prompt settings
    (sft: the rows are rendered as the search renders the prompt); threads/device: where it trains
    (sft; a scorer's are in `train`); progress, desc: its progress bar.
    """

    kind: str
    start: str
    records: list[dict]
    seed: int
    sft: "SFTConfig | None" = None
    train: "TrainConfig | None" = None
    target: str | None = None
    preset: str | None = None
    threads: int | None = None
    device: str = "auto"
    progress: bool = True
    desc: str = "training"

    def __post_init__(self):
        if self.kind not in JOB_KINDS:
            raise ValueError(f"kind must be one of {JOB_KINDS}, got {self.kind!r}")
        if (self.kind == "sft") != (self.sft is not None) or (self.kind != "sft") != (self.train is not None):
            raise ValueError(f"a {self.kind!r} job needs {'sft' if self.kind == 'sft' else 'train'} (and not the other)")

    def to_json(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                "sft": dataclasses.asdict(self.sft) if self.sft is not None else None,
                "train": dataclasses.asdict(self.train) if self.train is not None else None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TrainJob":
        from prm.train import TrainConfig
        from selftrain.sft import SFTConfig

        def tuples(d: Mapping) -> dict:  # JSON has no tuples; the configs' sequence fields are tuples
            return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

        return cls(**{**data, "sft": SFTConfig(**tuples(data["sft"])) if data.get("sft") else None,
                      "train": TrainConfig(**tuples(data["train"])) if data.get("train") else None})


def train_scorer_model(kind: str, start: str | Path, records: Sequence[Mapping], out: str | Path,
                       config: "TrainConfig", *,
                       target: str | None, seed: int, progress: bool, desc: str) -> dict:
    """A PRM/ORM (step records' `target`) or PPRM (pairs) trained from `start` into `out`; a model
    of that kind goes on training, another folder gets a fresh head. Checkpoints in
    `<out>.checkpoints` (resumed when present, removed at the end)."""
    from accelerate import PartialState

    from prm.rows import encode_pair_rows, encode_step_rows
    from prm.train import load_model_for, save_atomic, train_rows

    out = Path(out)
    model = load_model_for(kind, start, seed=seed)
    limit = config.max_length or model.max_length
    if kind == "pprm":
        rows, loss = encode_pair_rows(model, records, max_length=limit), config.loss or "bce"
    else:
        rows = encode_step_rows(model, records, target=target, mode=kind, max_length=limit)
        loss = config.loss or ("bce" if target == "labels" else "mse")
    checkpoints = out.parent / f"{out.name}.checkpoints"
    resume = checkpoints.is_dir() and any(checkpoints.glob("step-*"))
    info = train_rows(model, rows, config, loss=loss, pad_id=model.pad_id, checkpoint_dir=checkpoints,
                      resume=resume, progress=progress, desc=desc)
    if PartialState().is_main_process:
        save_atomic(out, lambda tmp: model.save_pretrained(tmp), overwrite=True)
        shutil.rmtree(checkpoints, ignore_errors=True)
    return {"rows": len(rows), "steps": info["steps"], "final_loss": info["final_loss"], "loss": loss,
            "processes": info["processes"]}


def _run_job(job: TrainJob, out: Path) -> dict:
    if job.kind == "sft":
        from selftrain.sft import sft_policy

        info = sft_policy(job.start, job.records, out, job.sft, seed=job.seed, num_threads=job.threads,
                          progress=job.progress, device=job.device, preset=job.preset)
        return {"traces": len(job.records), "steps": info["steps"], "final_loss": info["final_loss"],
                "processes": info["processes"]}
    return train_scorer_model(job.kind, job.start, job.records, out, job.train, target=job.target, seed=job.seed,
                              progress=job.progress, desc=job.desc)


def launch_mode() -> str:
    """'accelerate' when more than one CUDA device is visible (or forced), else 'inprocess'."""
    forced = os.environ.get(LAUNCH_ENV)
    if forced in ("accelerate", "inprocess"):
        return forced
    try:
        import torch

        return "accelerate" if torch.cuda.device_count() > 1 else "inprocess"
    except Exception:  # noqa: BLE001 - no usable torch.cuda: one process
        return "inprocess"


def run_training(job: TrainJob, folder: Path) -> dict:
    """Runs a training job for the stage that writes `folder`; returns its info.

    In process on one device; otherwise the job (records included) is written to
    `<folder>.job.json` and run by `accelerate launch` with one process per GPU, and the main
    process's info is read back.
    """
    if launch_mode() == "inprocess":
        return _run_job(job, folder)
    import torch

    processes = max(1, torch.cuda.device_count())
    path = folder.parent / f"{folder.name}.job.json"
    path.write_text(json.dumps({"job": job.to_json(), "out": str(folder)}), encoding="utf-8")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
               *(["--multi_gpu"] if processes > 1 else ["--cpu"]), "-m", "selftrain.train_stage", str(path)]
    subprocess.run(command, check=True)
    info = json.loads((folder.parent / f"{folder.name}.info.json").read_text(encoding="utf-8"))
    path.unlink(missing_ok=True)
    (folder.parent / f"{folder.name}.info.json").unlink(missing_ok=True)
    return info


def main(argv: list[str] | None = None) -> int:
    from accelerate import PartialState

    argv = sys.argv[1:] if argv is None else argv
    path = Path(argv[0])
    saved = json.loads(path.read_text(encoding="utf-8"))
    out = Path(saved["out"])
    info = _run_job(TrainJob.from_json(saved["job"]), out)
    if PartialState().is_main_process:
        (out.parent / f"{out.name}.info.json").write_text(json.dumps(info), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
