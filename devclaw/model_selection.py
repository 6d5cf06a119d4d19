"""Which model a task gets: DevClaw's keyword heuristic, matched on whole words.

Aliases map to full model ids; a workspace overrides or adds aliases in the ``models`` object of
projects.json (see docs/CONFIGURATION.md), so no code change is needed to use other models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from devclaw.workflow import ROLES, Role

DEFAULT_MODELS: dict[str, str] = {
    "haiku": "anthropic/claude-haiku-4-5",
    "sonnet": "anthropic/claude-sonnet-4-5",
    "opus": "anthropic/claude-opus-4-5",
    "grok": "github-copilot/grok-code-fast-1",
}

SIMPLE_KEYWORDS = (
    "typo",
    "fix typo",
    "rename",
    "update text",
    "change color",
    "minor",
    "small",
    "css",
    "style",
    "copy",
    "wording",
)
COMPLEX_KEYWORDS = (
    "architect",
    "refactor",
    "redesign",
    "system-wide",
    "migration",
    "database schema",
    "security",
    "performance",
    "infrastructure",
    "multi-service",
)
SIMPLE_MAX_WORDS = 100
COMPLEX_MIN_WORDS = 500


def _whole_words(keywords: tuple[str, ...]) -> re.Pattern[str]:
    # (?<!\w) and (?!\w) rather than \b so that "system-wide" and "multi-service" match as phrases.
    alternatives = "|".join(re.escape(keyword) for keyword in keywords)
    return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])")


_SIMPLE = _whole_words(SIMPLE_KEYWORDS)
_COMPLEX = _whole_words(COMPLEX_KEYWORDS)


@dataclass(frozen=True)
class ModelChoice:
    alias: str
    full_model: str
    reason: str
    override: bool = False


def select_model(
    title: str,
    description: str,
    role: Role,
    *,
    override: str | None = None,
    models: dict[str, str] | None = None,
) -> ModelChoice:
    table = {**DEFAULT_MODELS, **(models or {})}
    if override:
        # An alias we know resolves; anything else is taken as a full model id ("provider/model").
        return ModelChoice(override, table.get(override, override), f"User override: {override}", True)
    alias, reason = _heuristic(f"{title} {description}".lower(), role)
    return ModelChoice(alias, table.get(alias, alias), reason)


def full_model(alias: str | None, models: dict[str, str] | None = None) -> str | None:
    """The full model id of an alias (an unknown alias is taken as a full id already)."""
    if alias is None:
        return None
    return {**DEFAULT_MODELS, **(models or {})}.get(alias, alias)


def _heuristic(text: str, role: Role) -> tuple[str, str]:
    default = ROLES[role].default_model if role in ROLES else None
    if default is not None:
        return default, f"Default {role.upper()} model"
    words = len(text.split())
    simple = _SIMPLE.search(text)
    complex_ = _COMPLEX.search(text)
    if simple and words < SIMPLE_MAX_WORDS:
        return "haiku", f'Simple task ("{simple.group()}", {words} words)'
    if complex_:
        return "opus", f'Complex task ("{complex_.group()}")'
    if words > COMPLEX_MIN_WORDS:
        return "opus", f"Complex task ({words} words)"
    return "sonnet", f"Standard {role} task"
