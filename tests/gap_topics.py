"""Messages about a topic the catalog lacks (pet insurance claims): what gap mining must find (tests/intent/test_gaps.py,
bench/gaps.py). No Django here: the bench imports it without a project."""

from __future__ import annotations

import random


def pet_insurance_messages(rng: random.Random, n: int = 30) -> list[str]:
    pets = ["dog", "cat", "puppy", "kitten", "pet", "parrot"]
    acts = ["file a claim for", "submit a claim for", "claim insurance for", "start an insurance claim for",
            "make a claim on", "open a claim about"]
    things = ["my {p}'s surgery", "the vet visit of my {p}", "my {p}'s emergency treatment", "my {p}'s vaccination",
              "my {p}'s medication"]
    openers = ["", "i want to ", "how do i ", "can you help me ", "please "]
    messages: list[str] = []
    while len(messages) < n:
        message = (f"{rng.choice(openers)}{rng.choice(acts)} {rng.choice(things).format(p=rng.choice(pets))}"
                   f" with my pet insurance").strip()
        if message not in messages:
            messages.append(message)
    return messages
