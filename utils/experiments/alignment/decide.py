"""Which trained model shows the method's effect best? The rule of issue 15, applied to the study's tables.

A model shows the effect when its pullbacks differ from its gradients (low ``pg_ascent`` cosine at the
study's temperature) and its pullbacks, more than its gradients, agree with the other models
(``agree_ascent``) and move them (``transfer_logp``, as the source). :func:`model_effects` collects these
three numbers per model from ``summary.csv`` and ``paired.csv``; :func:`choose_default` keeps today's
default unless another model of equal accuracy is better on all three, the first with separated 95% CIs.
Works from the CSV rows alone (strings) or fresh rows (numbers).
"""
from __future__ import annotations

import math


def _mean(rows: list[dict], key: str = "mean") -> float:
    values = [float(r[key]) for r in rows]
    return sum(values) / len(values) if values else math.nan


def model_effects(summary: list[dict], paired_rows: list[dict], temperature: float = 0.3) -> dict[str, dict]:
    """Per model: ``pg`` (mean, ci_low, ci_high of the pullback-vs-gradient ascent cosine at ``temperature``),
    ``agree_gain`` (pullback minus gradient ascent agreement, averaged over the pairs holding the model) and
    ``transfer_gain`` (pullback minus gradient log-probability rise, averaged over the models it is applied to).
    """
    effects = {}
    for row in summary:
        if row["measure"] == "pg_ascent" and math.isclose(float(row["temperature"]), temperature):
            effects[row["model"]] = {"pg": tuple(float(row[k]) for k in ("mean", "ci_low", "ci_high"))}
    for name, effect in effects.items():
        effect["agree_gain"] = _mean([r for r in paired_rows if r["measure"] == "agree_ascent"
                                      and name in (r["model"], r["other"])])
        effect["transfer_gain"] = _mean([r for r in paired_rows if r["measure"] == "transfer_logp"
                                         and r["model"] == name])
    return effects


def choose_default(effects: dict[str, dict], accuracies: dict[str, float], current: str = "bundled",
                   tolerance: float = 0.01) -> tuple[str, list[str]]:
    """The model to use for the offline figures and explorer, and the sentences that justify it.

    A candidate replaces ``current`` only if its accuracy is within ``tolerance`` of it (or above), its
    pullback-vs-gradient CI lies wholly below ``current``'s, and both its agreement and transfer gains are
    larger. Among several, the lowest pullback-vs-gradient cosine wins.
    """
    if current not in effects:
        raise ValueError(f"the tables hold no pg_ascent rows for {current!r}; models: {sorted(effects)}")
    base = effects[current]
    lines, winners = [], []
    for name, e in effects.items():
        if name == current:
            continue
        checks = {
            f"accuracy {accuracies[name]:.3f} vs {accuracies[current]:.3f}":
                accuracies[name] >= accuracies[current] - tolerance,
            f"pullback-gradient cosine {e['pg'][0]:.3f} [{e['pg'][1]:.3f}, {e['pg'][2]:.3f}] vs "
            f"{base['pg'][0]:.3f} [{base['pg'][1]:.3f}, {base['pg'][2]:.3f}]": e["pg"][2] < base["pg"][1],
            f"agreement gain {e['agree_gain']:+.3f} vs {base['agree_gain']:+.3f}":
                e["agree_gain"] > base["agree_gain"],
            f"transfer gain {e['transfer_gain']:+.3f} vs {base['transfer_gain']:+.3f} nats":
                e["transfer_gain"] > base["transfer_gain"],
        }
        better = [k for k, ok in checks.items() if ok]
        worse = [k for k, ok in checks.items() if not ok]
        if not worse:
            winners.append(name)
            lines.append(f"{name} shows the effect more clearly than {current}: " + "; ".join(better) + ".")
        else:
            lines.append(f"{name} does not beat {current} on: " + "; ".join(worse) + ".")
    if not winners:
        return current, lines + [f"{current} stays the default: no model is better on every count."]
    best = min(winners, key=lambda n: effects[n]["pg"][0])
    return best, lines + [f"{best} becomes the default."]
