"""The model heuristic: the reference's keywords and thresholds, on whole words."""

from __future__ import annotations

import pytest

from devclaw.model_selection import select_model


@pytest.mark.parametrize(
    ("title", "description", "alias"),
    [
        ("Fix typo in header", "", "haiku"),
        ("Change color of the button", "", "haiku"),
        ("Update CSS for mobile", "", "haiku"),
        ("Refactor the auth module", "", "opus"),
        ("Database schema for orders", "", "opus"),
        ("System-wide logging", "", "opus"),
        ("Add login page", "", "sonnet"),
        ("Improve the process page", "", "sonnet"),  # "css" inside "process" is not a keyword
        ("Update copyright year", "", "sonnet"),  # "copy" inside "copyright" is not a keyword
        ("Small change", "word " * 120, "sonnet"),  # simple, but 100 words or more
        ("Add page", "word " * 501, "opus"),  # over 500 words
        ("Minor security fix", "", "haiku"),  # simple wins when short, as in the reference
    ],
)
def test_dev_heuristic(title: str, description: str, alias: str) -> None:
    assert select_model(title, description, "dev").alias == alias


def test_qa_is_grok_and_full_ids() -> None:
    choice = select_model("Refactor everything", "", "qa")
    assert (choice.alias, choice.full_model, choice.reason) == (
        "grok",
        "github-copilot/grok-code-fast-1",
        "Default QA model",
    )


def test_configured_aliases_and_overrides() -> None:
    assert select_model("Add page", "", "dev", models={"sonnet": "x/y"}).full_model == "x/y"
    override = select_model("Add page", "", "dev", override="fast", models={"fast": "groq/llama"})
    assert (override.alias, override.full_model, override.override) == ("fast", "groq/llama", True)
