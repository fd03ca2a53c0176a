"""The default-model rule of the alignment study, on hand-made tables (strings, as read from CSV)."""
import pytest

from utils.experiments.alignment.decide import choose_default, model_effects


def pg(model, mean, low, high, temperature="0.3"):
    return {"measure": "pg_ascent", "model": model, "other": "", "method": "pullback_vs_gradient",
            "temperature": temperature, "mean": str(mean), "ci_low": str(low), "ci_high": str(high), "n": "500"}


def gain(measure, model, other, mean):
    return {"measure": measure, "model": model, "other": other, "ours": "pullback", "baseline": "gradient",
            "temperature": "0.3", "mean": str(mean), "ci_low": str(mean - 0.01), "ci_high": str(mean + 0.01),
            "n": "500"}


def tables(plain_pg=(0.30, 0.28, 0.32), plain_transfer=0.5):
    summary = [pg("bundled", 0.55, 0.53, 0.57), pg("bundled", 0.1, 0.0, 0.2, temperature="1.0"),
               pg("seed1", 0.54, 0.52, 0.56), pg("plain", *plain_pg)]
    paired = [gain("agree_ascent", "bundled", "seed1", 0.10), gain("agree_ascent", "bundled", "plain", 0.20),
              gain("agree_ascent", "seed1", "plain", 0.30),
              gain("transfer_logp", "bundled", "seed1", 0.1), gain("transfer_logp", "bundled", "plain", 0.3),
              gain("transfer_logp", "seed1", "bundled", 0.2), gain("transfer_logp", "plain", "bundled", plain_transfer),
              gain("transfer_logp", "plain", "seed1", plain_transfer), gain("agree_field", "plain", "seed1", 9.0)]
    return summary, paired


ACCURACY = {"bundled": 0.872, "seed1": 0.870, "plain": 0.868}


def test_effects_average_the_right_rows():
    effects = model_effects(*tables())
    assert effects["bundled"]["pg"] == (0.55, 0.53, 0.57)  # the T = 1 row is ignored
    assert effects["bundled"]["agree_gain"] == pytest.approx(0.15)  # pairs with seed1 and plain
    assert effects["plain"]["agree_gain"] == pytest.approx(0.25)  # agree_field rows are ignored
    assert effects["bundled"]["transfer_gain"] == pytest.approx(0.2)  # bundled as the source only
    assert effects["plain"]["transfer_gain"] == pytest.approx(0.5)


def test_a_model_better_on_every_count_becomes_the_default():
    name, lines = choose_default(model_effects(*tables()), ACCURACY)
    assert name == "plain" and lines[-1] == "plain becomes the default."
    assert any(line.startswith("seed1 does not beat bundled on: pullback-gradient cosine") for line in lines)


@pytest.mark.parametrize("change", ["overlapping CI", "weaker transfer", "lower accuracy"])
def test_one_failed_count_keeps_the_current_default(change):
    summary, paired = tables(plain_pg=(0.50, 0.45, 0.54) if change == "overlapping CI" else (0.30, 0.28, 0.32),
                             plain_transfer=0.1 if change == "weaker transfer" else 0.5)
    accuracy = {**ACCURACY, "plain": 0.80} if change == "lower accuracy" else ACCURACY
    name, lines = choose_default(model_effects(summary, paired), accuracy)
    assert name == "bundled" and "no model is better on every count" in lines[-1]


def test_missing_current_model_is_named():
    summary, paired = tables()
    with pytest.raises(ValueError, match="'bundled'"):
        choose_default(model_effects(summary[2:], paired), ACCURACY)
