"""The training stages of a run (policy SFT, PRM / ORM / PPRM / value model), in this process or,
when more than one GPU is present, through `accelerate launch` (one process per GPU, data
parallel; `prm.train.train_rows` runs on accelerate either way).

    run_training(job, folder)        a job dict: {"kind": "sft" | "prm" | "orm" | "pprm", ...}
    python -m selftrain.train_stage JOB.json    what `accelerate launch` runs

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
from typing import Mapping, Sequence

__all__ = ["launch_mode", "run_training", "train_scorer_model"]

LAUNCH_ENV = "TREESEARCH_TRAIN_LAUNCH"


def train_scorer_model(kind: str, start: str | Path, records: Sequence[Mapping], out: str | Path, train: dict, *,
                       target: str | None, seed: int, progress: bool, desc: str) -> dict:
    """A PRM/ORM (step records' `target`) or PPRM (pairs) trained from `start` into `out`; a model
    of that kind goes on training, another folder gets a fresh head. Checkpoints in
    `<out>.checkpoints` (resumed when present, removed at the end)."""
    from accelerate import PartialState

    from prm.rows import encode_pair_rows, encode_step_rows
    from prm.train import TrainConfig, load_model_for, save_atomic, train_rows

    out = Path(out)
    config = TrainConfig(**train)
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


def _run_job(job: Mapping) -> dict:
    if job["kind"] == "sft":
        from selftrain.sft import SFTConfig, sft_policy

        config = SFTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in job["sft"].items()})
        info = sft_policy(job["start"], job["records"], job["out"], config, seed=job["seed"],
                          num_threads=job.get("threads"), progress=job["progress"], device=job.get("device", "auto"))
        return {"traces": len(job["records"]), "steps": info["steps"], "final_loss": info["final_loss"],
                "processes": info["processes"]}
    return train_scorer_model(job["kind"], job["start"], job["records"], job["out"], job["train"],
                              target=job.get("target"), seed=job["seed"], progress=job["progress"],
                              desc=job.get("desc", "training"))


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


def run_training(job: dict, folder: Path) -> dict:
    """Runs a training job for the stage that writes `folder` (job["out"]); returns its info.

    In process on one device; otherwise the job (records included) is written to
    `<folder>.job.json` and run by `accelerate launch` with one process per GPU, and the main
    process's info is read back.
    """
    job = {**job, "out": str(folder)}
    if launch_mode() == "inprocess":
        return _run_job(job)
    import torch

    processes = max(1, torch.cuda.device_count())
    path = folder.parent / f"{folder.name}.job.json"
    path.write_text(json.dumps(job), encoding="utf-8")
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
    job = json.loads(path.read_text(encoding="utf-8"))
    info = _run_job(job)
    if PartialState().is_main_process:
        out = Path(job["out"])
        (out.parent / f"{out.name}.info.json").write_text(json.dumps(info), encoding="utf-8")
    return 0


def job_config(config) -> dict:
    """A dataclass as the plain dict a job carries."""
    return dataclasses.asdict(config)


if __name__ == "__main__":
    sys.exit(main())
