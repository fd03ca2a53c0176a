"""Markdown tables of the alignment study, from hand-made summary and paired rows (strings, as read from CSV)."""
from utils.experiments.alignment.tables import comparison_table, similarity_table


def row(measure, model, other, method, temperature, mean, low, high):
    return {"measure": measure, "model": model, "other": other, "method": method, "temperature": temperature,
            "mean": str(mean), "ci_low": str(low), "ci_high": str(high), "n": "10"}


SUMMARY = [row("pg_field", "a", "", "pullback_vs_gradient", "0.3", 0.5, 0.4, 0.6),
           row("pg_ascent", "a", "", "pullback_vs_gradient", "0.3", 0.25, 0.2, 0.3),
           row("pg_field", "a", "", "pullback_vs_gradient", "1.0", 0.125, 0.1, 0.15),
           row("pg_field", "b", "", "pullback_vs_gradient", "0.3", 0.75, 0.7, 0.8),
           row("agree_ascent", "a", "b", "pullback", "0.3", 0.3, 0.25, 0.35),
           row("agree_ascent", "a", "b", "gradient", "", 0.1, 0.05, 0.15),
           row("transfer_logp", "b", "a", "pullback", "0.3", 1.5, 1.0, 2.0)]
PAIRED = [{"measure": "agree_ascent", "model": "a", "other": "b", "ours": "pullback", "baseline": "gradient",
           "temperature": "0.3", "mean": "0.2", "ci_low": "0.15", "ci_high": "0.25", "n": "10"},
          {"measure": "transfer_logp", "model": "b", "other": "a", "ours": "pullback", "baseline": "gradient",
           "temperature": "0.3", "mean": "-0.5", "ci_low": "-0.9", "ci_high": "-0.1", "n": "10"}]


def test_comparison_table_sets_both_methods_and_their_difference_on_one_line():
    lines = comparison_table(SUMMARY, PAIRED).splitlines()
    assert len(lines) == 4 and all(line.count("|") == 8 for line in lines)
    assert lines[2] == ("| 5-step agreement | a & b | pullback | 0.300 [0.250, 0.350] | gradient | "
                        "0.100 [0.050, 0.150] | +0.200 [+0.150, +0.250] |")
    # transfer is directed; the gradient's row is missing from the summary and shows as a dash
    assert lines[3].startswith("| transfer: log p rise | b → a | pullback | 1.500 [1.000, 2.000] | gradient | – |")
    assert lines[3].endswith("-0.500 [-0.900, -0.100] |")


def test_similarity_table_has_a_column_per_temperature_and_dashes_where_missing():
    lines = similarity_table(SUMMARY).splitlines()
    assert lines[0] == "| model | T = 0.3: field / 5-step | T = 1: field / 5-step |"
    assert lines[2] == "| a | 0.500 / 0.250 | 0.125 / – |"
    assert lines[3] == "| b | 0.750 / – | – / – |"
