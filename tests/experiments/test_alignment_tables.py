"""Markdown tables of the alignment study, from hand-made summary and paired rows (strings, as read from CSV).
The study's page shows them for the committed results (tests/experiments/test_pages.py)."""
from utils.experiments.alignment import paired_with_control
from utils.experiments.alignment.tables import (comparison_table, control_table,
                                                 focus_table, similarity_table, tally_table)


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


def test_focus_table_has_a_row_per_method_a_column_per_model_and_the_reference_last():
    summary = [row("focus", "a", "", "pullback", "0.3", 0.5, 0.375, 0.625),
               row("focus", "b", "", "pullback", "0.3", 0.25, 0.125, 0.375),
               row("focus", "a", "", "gradcam", "", 0.75, 0.625, 0.875),
               row("agree_field", "a", "b", "pullback", "0.3", 0.1, 0.0, 0.2)]
    lines = focus_table(summary, {"pullback": 0.7483}, "theirs").splitlines()
    assert lines[0] == "| method | a | b | theirs |"
    assert lines[2] == "| pullback | 0.500 [0.375, 0.625] | 0.250 [0.125, 0.375] | 0.748 |"
    assert lines[3] == "| gradcam | 0.750 [0.625, 0.875] | – | – |"
    assert len(lines) == 4 and focus_table(summary).splitlines()[0] == "| method | a | b |"


def test_control_table_puts_the_three_agreements_of_a_pair_on_one_line_and_the_own_cosines_below():
    summary = [row("agree_field", "a", "b", "pullback", "0.3", 0.5, 0.375, 0.625),
               row("agree_field_mismatched", "a", "b", "pullback", "0.3", 0.25, 0.125, 0.375),
               row("agree_field_specific", "a", "b", "pullback", "0.3", 0.25, 0.125, 0.375),
               row("agree_field", "a", "b", "gradient", "", 0.5, 0.375, 0.625),
               row("target_cosine", "a", "", "pullback", "0.3", 0.75, 0.625, 0.875),
               row("target_cosine", "a", "", "gradient", "", 0.5, 0.375, 0.625)]
    lines = control_table(summary).splitlines()
    assert lines[2] == "| a & b | pullback | 0.500 [0.375, 0.625] | 0.250 [0.125, 0.375] | +0.250 [+0.125, +0.375] |"
    assert lines[3] == "| a & b | gradient | 0.500 [0.375, 0.625] | – | – |"
    assert lines[5] == ("| model | pullback: own fields, target vs mismatched | "
                        "gradient: own fields, target vs mismatched |")
    assert lines[7] == "| a | 0.750 [0.625, 0.875] | 0.500 [0.375, 0.625] |" and len(lines) == 8


def test_tally_table_counts_the_comparisons_each_study_wins_and_marks_what_a_study_lacks():
    def diff(measure, mean, low, high, model="a", ours="pullback", baseline="gradient"):
        return {"measure": measure, "model": model, "other": "b", "ours": ours, "baseline": baseline,
                "temperature": "0.3", "mean": str(mean), "ci_low": str(low), "ci_high": str(high), "n": "10"}
    low_t = [diff("agree_field", 0.25, 0.125, 0.375), diff("agree_field", -0.5, -0.75, -0.25, model="c")]
    high_t = [diff("agree_field", 0.5, 0.25, 0.75), diff("agree_field", 0.125, -0.25, 0.5, model="c"),
              diff("focus", 0.0625, 0.03125, 0.125, ours="pullback_x_input", baseline="gradient_x_input")]
    lines = tally_table({"T = 0.3": low_t, "T = 1": high_t}).splitlines()
    assert lines[0] == "| measure | pullback vs | T = 0.3 | T = 1 |"
    assert lines[2] == ("| field agreement | gradient | 1 of 2 better, 1 worse; -0.500 to +0.250 | "
                        "1 of 2 better; +0.125 to +0.500 |")
    assert lines[3] == "| Focus | gradient_x_input | – | 1 of 1 better; +0.062 to +0.062 |" and len(lines) == 4


def test_paired_with_control_adds_only_the_controls_target_specific_rows(tmp_path):
    header = "measure,model,other,ours,baseline,temperature,mean,ci_low,ci_high,n\n"
    (tmp_path / "paired.csv").write_text(header + "agree_field,a,b,pullback,gradient,0.3,0.1,0.0,0.2,5\n")
    assert [r["measure"] for r in paired_with_control(tmp_path)] == ["agree_field"]  # no control yet
    (tmp_path / "control").mkdir()
    (tmp_path / "control" / "paired.csv").write_text(
        header + "agree_field,a,b,pullback,gradient,0.3,0.1,0.0,0.2,5\n"
        + "agree_field_specific,a,b,pullback,gradient,0.3,0.3,0.2,0.4,5\n")
    assert [r["measure"] for r in paired_with_control(tmp_path)] == ["agree_field", "agree_field_specific"]


def test_comparison_by_study_sets_each_study_in_its_column():
    from utils.experiments.alignment.tables import comparison_by_study

    hot = [{**r, "mean": "0.4", "ci_low": "0.3", "ci_high": "0.5"} for r in PAIRED[:1]]
    lines = comparison_by_study({"T = 0.3": (SUMMARY, PAIRED), "T = 1": (SUMMARY, hot)}).splitlines()
    assert lines[0] == ("| measure | models | pullback vs | T = 0.3: means; difference [95% CI] | "
                        "T = 1: means; difference [95% CI] |")
    assert lines[2] == ("| 5-step agreement | a & b | gradient | 0.300 vs 0.100; +0.200 [+0.150, +0.250] | "
                        "0.300 vs 0.100; +0.400 [+0.300, +0.500] |")
    assert lines[3] == "| transfer: log p rise | b → a | gradient | 1.500 vs –; -0.500 [-0.900, -0.100] | – |"


def test_accuracy_similarity_table_adds_the_accuracy_column():
    from utils.experiments.alignment.tables import accuracy_similarity_table

    lines = accuracy_similarity_table(SUMMARY, {"a": 0.8721, "b": 0.5}).splitlines()
    assert lines[0] == "| model | val accuracy | T = 0.3: field / 5-step | T = 1: field / 5-step |"
    assert lines[1] == "|---|---|---|---|" and lines[2] == "| a | 87.2% | 0.500 / 0.250 | 0.125 / – |"
