"""The ReST-MCTS* quality values (ARCHITECTURE.md): soft per-step targets of a partial solution, from
its single-step rewards and its distance to the answer.

    quality_values(step_rewards, remaining)   V_1..V_K from the rewards r_k and the distances m_k
    trace_quality_values(labels)              V of a whole trace from its 0/1 step labels

A module of their own because `prm.toy_traces` labels the toy world's traces with them while
`prm.data` imports from `prm.toy_traces` (self-training and the benchmarks still import these and
the toy names from `prm.data`): in either of those two modules they would close a cycle.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["quality_values", "trace_quality_values"]


def quality_values(step_rewards: Sequence[float], remaining: Sequence[int | float]) -> list[float]:
    """The ReST-MCTS* quality values V_1..V_K of a partial solution's steps (ARCHITECTURE.md).

        V_0 = 0,  V_k = max(V_{k-1} + w_k, 0),  w_k = (1 - V_{k-1}) / (m_k + 1) * (1 - 2 r_k)

    r_k is the single-step process reward in the paper's convention: 0 for a correct step, 1 for a
    wrong one (soft values in between); m_k is the reasoning distance, the number of steps still
    needed after step k to reach the answer (0 at the answer step). A correct trace of K steps
    (r = 0, m_k = K - k) climbs linearly, V_k = k / K, to 1 at its last step; a wrong step lowers V;
    V never leaves [0, 1].

    Args:
        step_rewards: [K] r_k in [0, 1].
        remaining: [K] m_k >= 0.

    Returns:
        [K] V_k in [0, 1].
    """
    if len(step_rewards) != len(remaining):
        raise ValueError(f"{len(step_rewards)} step rewards but {len(remaining)} distances")
    values, v = [], 0.0
    for r, m in zip(step_rewards, remaining):
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"step rewards must be in [0, 1], got {r}")
        if m < 0:
            raise ValueError(f"distances must be >= 0, got {m}")
        v = max(v + (1.0 - v) / (m + 1.0) * (1.0 - 2.0 * r), 0.0)
        values.append(min(v, 1.0))
    return values


def trace_quality_values(labels: Sequence[int | float]) -> list[float]:
    """Quality values of a whole trace from its 0/1 step labels: r_k = 1 - label_k, m_k = K - k."""
    k = len(labels)
    return quality_values([1.0 - float(x) for x in labels], [k - 1 - i for i in range(k)])
