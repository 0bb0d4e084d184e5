"""Deterministic English sentences for calibrating and evaluating text models (no downloads): used by
``models/build_text_model.py`` (install.sh --with-text-model) and the tests.

Templates over several domains, with questions, clauses and lengths from three words to ~40 tokens,
so the calibration ranges see short and long rows; ``sentences(n, seed)`` is stable across runs.
"""

from __future__ import annotations

import random
from pathlib import Path

_SUBJECTS = ["The engineer", "A small child", "My neighbour", "The committee", "Our team", "The old fisherman",
             "A tired nurse", "The startup", "The orchestra", "Every student", "The city council", "A stray cat",
             "The pilot", "Her grandmother", "The new manager", "A famous chef", "The river", "The server"]
_VERBS = ["repaired", "painted", "ignored", "celebrated", "studied", "cancelled", "delivered", "questioned",
          "discovered", "rebuilt", "measured", "translated", "forgot", "approved", "cooked", "crossed"]
_OBJECTS = ["the broken bicycle", "a long report about climate change", "the wooden bridge", "an old song",
            "the quarterly budget", "a recipe for lemon cake", "the database migration", "the museum's roof",
            "a letter from Japan", "the football match", "the noisy printer", "a map of the mountains",
            "the last train home", "an unexpected invoice", "the garden fence", "the security patch"]
_TAILS = ["yesterday afternoon", "before the storm arrived", "without telling anyone", "in less than an hour",
          "because the deadline moved", "while it was raining", "after a heated discussion", "for the third time",
          "despite the cost", "during the holidays", "with great care", "at dawn"]
_QUESTIONS = ["How do I reset my password?", "Where is the nearest pharmacy?", "Why is the sky blue?",
              "What time does the library open on Sundays?", "Can you recommend a good book about history?",
              "Is it safe to swim in the lake?", "Which laptop is best for programming?",
              "How long does it take to learn Spanish?", "What causes inflation?", "Who wrote this poem?"]
_FACTS = ["Water boils at one hundred degrees Celsius at sea level.", "The stock market fell sharply today.",
          "Regular exercise improves sleep quality.", "The new phone has a larger battery.",
          "Bees are essential for pollinating many crops.", "The meeting was moved to Thursday.",
          "This restaurant serves the best pizza in town.", "The vaccine trial showed promising results.",
          "Solar panels are becoming cheaper every year.", "The train was delayed by signal problems."]


def sentences(count: int, seed: int, exclude: frozenset[str] = frozenset()) -> list[str]:
    """``count`` distinct sentences not in ``exclude`` (held-out rows must not be calibration rows)."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set(exclude)
    while len(out) < count:
        kind = rng.random()
        if kind < 0.15:
            text = rng.choice(_QUESTIONS)
        elif kind < 0.3:
            text = rng.choice(_FACTS)
        else:
            text = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
            if rng.random() < 0.7:
                text += f" {rng.choice(_TAILS)}"
            if rng.random() < 0.25:
                text += f", and {rng.choice(_SUBJECTS).lower()} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
            text += "."
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def write_split(directory: Path, calibration: int, evaluation: int) -> tuple[Path, Path]:
    """Disjoint calibration and eval files of one sentence per line."""
    cal = sentences(calibration, seed=1)
    held_out = sentences(evaluation, seed=2, exclude=frozenset(cal))
    paths = directory / "calibration.txt", directory / "eval.txt"
    for path, lines in zip(paths, (cal, held_out), strict=True):
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths
