"""``pipeline.report``'s model section: its headline numbers are those of the model the files come from."""

from __future__ import annotations

from pipeline import report as rep
from tests.pipeline.test_validate_report import _report


def test_after_prune_the_headline_accuracy_is_the_pruned_model_s_and_the_source_figures_say_before():
    """Every file and parity row is the pruned model's: a bold 97.78 % beside files at 57.50 % contradicted them."""
    r = _report()
    r["prune"] = {"accuracy": {"trained": 0.9778, "pruned": 0.575}}
    text = "\n".join(rep.model_section(r))
    assert (
        "- **Test accuracy of the pruned model, the one every file is exported from and checked against: 57.50 %**"
        in text
    )
    assert "(the source model before --prune: 90.00 %)" in text
    assert "Test accuracy of the source model: 90.00 %" not in text
    assert (
        "would learn 8 (before --prune)" in text
        and "### Compact factor per ACL (eq. 25) of the source model, before --prune" in text
    )
    r["prune"]["accuracy"]["finetuned"] = 0.95
    assert "checked against: 95.00 %**" in "\n".join(rep.model_section(r)), "fine-tuned: that is the model exported"


def test_without_prune_the_model_section_is_as_before():
    text = "\n".join(rep.model_section({**_report(), "prune": None}))
    assert "- **Test accuracy of the source model: 90.00 %**" in text and "before --prune" not in text
