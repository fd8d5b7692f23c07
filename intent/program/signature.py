"""The DetectIntent signature: what an LM is asked, and what it must answer."""

import dspy


class DetectIntent(dspy.Signature):
    """Classify the user's chat message into exactly one intent of the catalog.

    Answer `out_of_scope` when no catalog intent fits. Use the user's role, current module and tab
    as context. Pick a workflow template and an agent template only from the lists given, and only
    when one fits the intent; otherwise leave them empty. Confidence is your probability (0 to 1)
    that the intent is right.
    """

    message: str = dspy.InputField(desc="The user's chat message.")
    user_role: str = dspy.InputField(desc="The user's role in the product, may be empty.")
    current_module: str = dspy.InputField(desc="The product module the user is in, may be empty.")
    current_tab: str = dspy.InputField(desc="The tab of that module, may be empty.")
    intent_catalog: list[str] = dspy.InputField(desc="Allowed intents: `name [module]: description`.")
    workflow_templates: list[str] = dspy.InputField(desc="Available workflow templates: `name [module]: ...`.")
    agent_templates: list[str] = dspy.InputField(desc="Available agent templates: `name [module]: ...`.")

    intent: str = dspy.OutputField(desc="One intent name from the catalog, or out_of_scope.")
    confidence: float = dspy.OutputField(desc="Probability between 0 and 1 that the intent is right.")
    requires_workflow: bool = dspy.OutputField(desc="True when answering needs a multi-step workflow.")
    workflow_template: str = dspy.OutputField(desc="A workflow template name from the list, or empty.")
    agent_template: str = dspy.OutputField(desc="An agent template name from the list, or empty.")
    reasoning: str = dspy.OutputField(desc="One or two sentences on why.")
