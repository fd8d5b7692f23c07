"""The intent catalog as plain, immutable data: what the detector may answer, and with which templates.

Django builds a `Catalog` from its tables; notebooks and commands can build one from a file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property

OUT_OF_SCOPE = "out_of_scope"


@dataclass(frozen=True)
class IntentSpec:
    name: str
    description: str = ""
    module: str = ""
    requires_workflow: bool = False
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class TemplateSpec:
    name: str
    description: str = ""
    module: str = ""
    intents: tuple[str, ...] = ()
    trigger_examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class Catalog:
    intents: tuple[IntentSpec, ...]
    workflow_templates: tuple[TemplateSpec, ...] = ()
    agent_templates: tuple[TemplateSpec, ...] = ()
    source: str = "database"  # "database" or "fallback"
    _by_name: dict[str, IntentSpec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {intent.name: intent for intent in self.intents})

    @cached_property
    def version(self) -> str:
        """A short content hash: the same catalog gives the same version in any process."""
        content = {
            "intents": [asdict(intent) for intent in sorted(self.intents, key=lambda i: i.name)],
            "workflow_templates": [asdict(t) for t in sorted(self.workflow_templates, key=lambda t: t.name)],
            "agent_templates": [asdict(t) for t in sorted(self.agent_templates, key=lambda t: t.name)],
        }
        payload = json.dumps(content, sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(payload).hexdigest()[:12]

    @property
    def intent_names(self) -> tuple[str, ...]:
        return tuple(intent.name for intent in self.intents)

    def get(self, name: str) -> IntentSpec | None:
        return self._by_name.get(name)

    def training_data(self) -> tuple[list[str], list[str]]:
        texts: list[str] = []
        labels: list[str] = []
        for intent in self.intents:
            for example in intent.examples or (intent.name.replace("_", " "),):
                texts.append(example)
                labels.append(intent.name)
        return texts, labels

    def templates_for(self, intent: str, *, module: str = "") -> tuple[str | None, str | None]:
        """The workflow and agent template selected by an intent (a module match wins a tie)."""
        return _pick(self.workflow_templates, intent, module), _pick(self.agent_templates, intent, module)

    def prompt_intents(self) -> list[str]:
        """One line per intent for an LM prompt: name, module, description and one example."""
        lines = []
        for intent in self.intents:
            example = f' e.g. "{intent.examples[0]}"' if intent.examples else ""
            lines.append(f"{intent.name} [{intent.module}]: {intent.description}{example}".strip())
        return lines

    @staticmethod
    def prompt_templates(templates: tuple[TemplateSpec, ...]) -> list[str]:
        return [f"{t.name} [{t.module}]: {t.description} (for: {', '.join(t.intents)})" for t in templates]


def _pick(templates: tuple[TemplateSpec, ...], intent: str, module: str) -> str | None:
    matches = [t for t in templates if intent in t.intents]
    if not matches:
        return None
    matches.sort(key=lambda t: (t.module != module, t.name))
    return matches[0].name


def _intent(name: str, module: str, description: str, examples: list[str], requires_workflow: bool = False):
    return IntentSpec(name, description, module, requires_workflow, tuple(examples))


# Used when the database holds no active category, so a fresh install still answers.
FALLBACK_CATALOG = Catalog(
    source="fallback",
    intents=(
        _intent("greeting", "general", "The user says hello or starts a conversation.",
                ["hi", "hello there", "good morning", "hey, how are you", "hi assistant", "howdy"]),
        _intent("help", "general", "The user asks what the assistant can do or how to use it.",
                ["what can you do", "help me please", "how does this work", "i need help using this",
                 "what are your features", "show me how to get started"]),
        _intent("create_report", "reports", "The user wants a new report built.",
                ["create a sales report for last month", "build me a report of weekly signups",
                 "generate a revenue report", "i need a report on churn", "make a quarterly report"], True),
        _intent("schedule_meeting", "calendar", "The user wants to book a meeting.",
                ["schedule a meeting with the team tomorrow", "book a call with anna on friday",
                 "set up a meeting at 3pm", "can you arrange a sync with sales", "put a meeting on my calendar"],
                True),
        _intent("check_status", "operations", "The user asks about the status of an order, job or ticket.",
                ["what is the status of my order", "is my ticket resolved", "check on job 42",
                 "where is my delivery", "has the export finished"]),
        _intent("update_settings", "account", "The user wants to change account or app settings.",
                ["change my password", "update my email address", "turn off notifications",
                 "switch the language to french", "edit my profile settings"], True),
        _intent("report_problem", "support", "The user reports a bug, an outage or something broken.",
                ["the app keeps crashing", "i found a bug", "the page will not load", "something is broken",
                 "i get an error when i log in"], True),
        _intent("goodbye", "general", "The user ends the conversation.",
                ["bye", "goodbye", "see you later", "thanks, that is all", "talk to you tomorrow"]),
    ),
    workflow_templates=(
        TemplateSpec("report_builder", "Collects parameters and builds a report.", "reports", ("create_report",)),
        TemplateSpec("meeting_scheduler", "Finds a slot and sends invitations.", "calendar", ("schedule_meeting",)),
        TemplateSpec("settings_change", "Confirms and applies a settings change.", "account", ("update_settings",)),
        TemplateSpec("incident_intake", "Files a support ticket with diagnostics.", "support", ("report_problem",)),
    ),
    agent_templates=(
        TemplateSpec("support_agent", "Troubleshoots problems with the user.", "support",
                     ("report_problem", "check_status")),
        TemplateSpec("onboarding_agent", "Explains the product and its features.", "general", ("help",)),
    ),
)
