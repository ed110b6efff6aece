"""Process reward models for the search and for self-training (ARCHITECTURE.md).

    PRM (prm.model)           causal LM backbone + scalar head at every step end; a `StepScorer`
    PPRM (prm.pairwise)       P(a > b | problem) from one reading of both solutions
    ebc_rank, ebc_select      Enhanced Borda Count over PPRM preferences (prm.ebc)
    quality_values            the ReST-MCTS* quality-value targets (prm.quality)
    step_dataset, ...         step-labelled datasets: files, PRM800K, Math-Shepherd (prm.data)
    toy_step_records, ...     the toy world's oracle-labelled traces (prm.toy_traces)
    train_rows                the training loop (prm.train; `python -m prm.train`)
    step_auc, ...             metrics of PRMs and PPRMs (prm.metrics; `python -m prm.eval`)
    ensure_toy_prm            the toy world's tiny PRM, built on first use (prm.toy; `python -m prm.toy build`)

The names are re-exported lazily: `import prm` does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "PRM": "prm.model", "PRMConfig": "prm.model", "PRMLoadError": "prm.model",
    "PPRM": "prm.pairwise",
    "EBCJudge": "prm.ebc", "borda_scores": "prm.ebc", "ebc_rank": "prm.ebc", "ebc_select": "prm.ebc", "preference_matrix": "prm.ebc",
    "transitive_closure": "prm.ebc",
    "StepDataError": "prm.data", "load_pair_dataset": "prm.data", "load_step_dataset": "prm.data",
    "pair_records": "prm.data", "read_step_records": "prm.data", "step_dataset": "prm.data",
    "toy_step_dataset": "prm.data",
    "quality_values": "prm.quality", "trace_quality_values": "prm.quality",
    "ToyDataConfig": "prm.toy_traces", "toy_step_records": "prm.toy_traces",
    "TrainConfig": "prm.train", "train_rows": "prm.train",
    "first_error_accuracy": "prm.metrics", "step_auc": "prm.metrics",
    "ensure_toy_pprm": "prm.toy", "ensure_toy_prm": "prm.toy", "load_toy_pprm": "prm.toy", "load_toy_prm": "prm.toy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'prm' has no attribute {name!r}")


def __dir__():
    return __all__
