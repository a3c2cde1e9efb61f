"""How the simulated-click protocol is scored: Dice after k clicks and the number of clicks to a Dice
target (NoC). The clicks themselves follow the rules in ``clicks.py``, which training shares."""

from __future__ import annotations

NOC_CAP = 20
DICE_AT = (1, 3, 5, 10)
NOC_AT = (0.85, 0.90)


def noc(dices, threshold: float, cap: int = NOC_CAP) -> int:
    """Number of clicks to reach ``threshold`` Dice, or ``cap`` when it is never reached within the
    first ``cap`` clicks (runs shorter than ``cap`` therefore count as failures, never as successes)."""
    for k, value in enumerate(dices[:cap], start=1):
        if value >= threshold:
            return k
    return cap


def object_metrics(dices) -> dict[str, float]:
    """Dice@k (for the k that were run; ``dices[k-1]`` is the Dice after k clicks) and NoC@85/90."""
    metrics = {f"dice@{k}": float(dices[k - 1]) for k in DICE_AT if k <= len(dices)}
    metrics.update({f"noc@{round(t * 100)}": noc(dices, t) for t in NOC_AT})
    return metrics
