"""A small built-in sentiment task with a controlled domain shift, for running without any data directory.

Source domain: film reviews; target domain: restaurant reviews. Both share the general sentiment words, each has
its own nouns and a few domain-specific sentiment words (a film can be *gripping*, a dish *bland*), so a source
model transfers partly and has something left to learn. Generated from a seed: the same seed gives the same data.
"""

from __future__ import annotations

import random
from typing import Literal

__all__ = ["synthetic_task"]

_SHARED_POS = ["great", "wonderful", "excellent", "lovely", "superb", "delightful"]
_SHARED_NEG = ["terrible", "awful", "dreadful", "poor", "disappointing", "dismal"]
_DOMAIN = {
    "film": {
        "nouns": ["film", "movie", "plot", "script", "cast", "ending", "soundtrack", "director"],
        "pos": ["gripping", "moving", "hilarious", "riveting"],
        "neg": ["boring", "predictable", "overlong", "wooden"],
    },
    "restaurant": {
        "nouns": ["meal", "dish", "service", "dessert", "waiter", "menu", "soup", "kitchen"],
        "pos": ["tasty", "fresh", "juicy", "attentive"],
        "neg": ["bland", "stale", "greasy", "rude"],
    },
}
_TEMPLATES = [
    "the {noun} was {adj} .",
    "what a {adj} {noun} , honestly .",
    "i found the {noun} {adj} and the {noun2} {adj2} .",
    "{adj} {noun} , {adj2} {noun2} .",
    "not a single {adj} moment : the {noun} felt {adj2} .",
]


def synthetic_task(
    domain: Literal["film", "restaurant"], n: int, seed: int = 0, shared_share: float = 0.5
) -> list[tuple[str, int]]:
    """``n`` balanced ``(text, label)`` pairs of one domain (label 1 = positive).

    Args:
        domain: ``"film"`` (the source) or ``"restaurant"`` (the target).
        n: number of sentences.
        seed: generator seed.
        shared_share: probability that a sentiment word comes from the shared list rather than the domain's own.

    Example:
        >>> pairs = synthetic_task("film", 4, seed=1)
        >>> len(pairs), sorted({y for _, y in pairs})
        (4, [0, 1])
        >>> synthetic_task("film", 4, seed=1) == pairs
        True
    """
    if domain not in _DOMAIN:
        raise ValueError(f"Expected argument `domain` to be one of {list(_DOMAIN)} but got {domain!r}.")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"Expected argument `n` to be a positive int but got {n!r}.")
    rng = random.Random(f"{domain}-{seed}")
    words = _DOMAIN[domain]
    out = []
    for i in range(n):
        label = i % 2
        polarity = "pos" if label else "neg"
        shared = _SHARED_POS if label else _SHARED_NEG

        def adj() -> str:
            return rng.choice(shared) if rng.random() < shared_share else rng.choice(words[polarity])  # noqa: B023

        text = rng.choice(_TEMPLATES).format(
            noun=rng.choice(words["nouns"]), noun2=rng.choice(words["nouns"]), adj=adj(), adj2=adj()
        )
        out.append((text, label))
    rng.shuffle(out)
    return out
