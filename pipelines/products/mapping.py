"""From the towers' class distributions onto the target categories, all of the rule in one place.

A product's ensemble = --image_weight x (image tower, top k, renormalised) + the rest x (text tower,
top k, renormalised); a tower it has no input for (no usable image, no words) is left out. Each
target category name, passed through the text tower, is a distribution over the same training
classes (its projection, sharpened or softened by the temperature). The product's category is the
one whose projection is nearest: the smallest KL(ensemble || projection), optionally mixed with
the zero-shot baseline (`Rule.zero_shot_weight`). The original system
took that argmin over the target categories and then read the TRAINING label table at that index
(the wrong table): here the index always reads the target category list (`assign` returns the
index; callers read `categories[index]`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

EPSILON = 1e-6
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # --image_weight candidates when target labels choose it
TEMPERATURES = (0.5, 1.0, 2.0, 4.0, 8.0)
ZERO_SHOT_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclasses.dataclass(frozen=True)
class Member:
    """One target product's tower outputs; None where it has no such input."""

    image: np.ndarray | None
    text: np.ndarray | None

    @property
    def modalities(self) -> str:
        return "+".join(name for name, value in (("image", self.image), ("text", self.text)) if value is not None)


def top_k(distribution: np.ndarray, k: int) -> np.ndarray:
    kept = np.zeros_like(distribution, dtype=np.float64)
    order = np.argsort(-distribution, kind="stable")[:k]
    kept[order] = distribution[order]
    return kept / max(kept.sum(), EPSILON)


def sharpen(distribution: np.ndarray, temperature: float) -> np.ndarray:
    powered = np.power(np.clip(distribution, EPSILON, 1.0), 1.0 / temperature)
    return powered / powered.sum(axis=-1, keepdims=True)


def ensemble(member: Member, k: int, image_weight: float) -> np.ndarray:
    if member.image is None and member.text is None:
        raise ValueError("a product with neither a usable image nor words")
    if member.image is None:
        return top_k(member.text, k)
    if member.text is None:
        return top_k(member.image, k)
    return image_weight * top_k(member.image, k) + (1.0 - image_weight) * top_k(member.text, k)


def kl_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) of one distribution p against each row of q (p's zeros contribute nothing)."""
    q = np.clip(q, EPSILON, 1.0)
    support = p > 0
    return np.sum(p[support] * (np.log(p[support]) - np.log(q[..., support])), axis=-1)


@dataclasses.dataclass(frozen=True)
class Rule:
    """How a product's category is decided. zero_shot_weight mixes in the zero-shot baseline's
    log-probabilities (a sentence encoder's description-to-name similarity): 0 is the KL rule
    alone, 1 the zero-shot baseline alone."""

    image_weight: float = 0.5
    temperature: float = 1.0
    zero_shot_weight: float = 0.0


def zero_shot_log_probabilities(similarities: np.ndarray, scale: float = 20.0) -> np.ndarray:
    """Cosine similarities (products x categories) as log-probabilities over the categories."""
    logits = scale * similarities
    logits = logits - logits.max(axis=1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def assign(members: list[Member], projections: np.ndarray, k: int, rule: Rule,
           zero_shot: np.ndarray | None = None) -> tuple[list[int], list[float]]:
    """(index into the target categories, its KL) per product: the smallest KL(ensemble ||
    projection), or with rule.zero_shot_weight > 0 the best mix of -KL and the zero-shot
    log-probability (`zero_shot`: products x categories)."""
    targets = sharpen(projections, rule.temperature)
    choices, divergences = [], []
    for row, member in enumerate(members):
        divergence = kl_divergence(ensemble(member, k, rule.image_weight), targets)
        score = -divergence
        if zero_shot is not None and rule.zero_shot_weight > 0:
            score = (1.0 - rule.zero_shot_weight) * score + rule.zero_shot_weight * zero_shot[row]
        choice = int(np.argmax(score))
        choices.append(choice)
        divergences.append(float(divergence[choice]))
    return choices, divergences


def _accuracy(choices, truth: dict[str, int], keys, subset) -> float:
    scored = [(choice, truth[key]) for choice, key in zip(choices, keys) if key in truth and key in subset]
    return float(np.mean([choice == label for choice, label in scored])) if scored else 0.0


def tune(members, projections, k, truth: dict[str, int], keys: list[str], fraction: float, seed: int,
         zero_shot: np.ndarray | None = None) -> tuple[Rule, set[str]]:
    """The rule with the best accuracy on a seeded `fraction` of the labeled products (ties: the
    first in the grids' order), and the keys it was chosen on."""
    labeled = sorted(key for key in keys if key in truth)
    chosen = set(np.random.default_rng(seed).permutation(labeled)[:max(1, round(fraction * len(labeled)))].tolist())
    mixes = ZERO_SHOT_WEIGHTS if zero_shot is not None else (0.0,)
    rules = [Rule(weight, temperature, mix) for mix in mixes for weight in WEIGHTS for temperature in TEMPERATURES]
    best = max(rules, key=lambda rule: _accuracy(assign(members, projections, k, rule, zero_shot)[0],
                                                 truth, keys, chosen))
    return best, chosen


def compare(members, projections, k, rule: Rule, truth, keys, tuned_on: set[str],
            zero_shot: np.ndarray | None = None) -> dict:
    """Target accuracy of image only, text only, their KL ensemble (the rule's weight and
    temperature), the zero-shot baseline and the rule itself, on the labeled products not used
    for tuning."""
    held_out = {key for key in keys if key in truth} - tuned_on
    figures = {"products_scored": len(held_out), "products_tuned_on": len(tuned_on)}
    variants = {"image_only": dataclasses.replace(rule, image_weight=1.0, zero_shot_weight=0.0),
                "text_only": dataclasses.replace(rule, image_weight=0.0, zero_shot_weight=0.0),
                "ensemble": dataclasses.replace(rule, zero_shot_weight=0.0)}
    if zero_shot is not None:
        variants["zero_shot"] = dataclasses.replace(rule, zero_shot_weight=1.0)
        variants["ensemble_with_zero_shot"] = rule
    for name, variant in variants.items():
        figures[name] = _accuracy(assign(members, projections, k, variant, zero_shot)[0], truth, keys, held_out)
    return figures


def format_comparison(figures: dict) -> str:
    methods = [name for name in ("image_only", "text_only", "ensemble", "zero_shot", "ensemble_with_zero_shot")
               if name in figures]
    return (f"target accuracy over {figures['products_scored']} labeled products not used for tuning "
            f"({figures['products_tuned_on']} were): "
            + ", ".join(f"{name.replace('_', ' ')} {figures[name]:.4f}" for name in methods))
