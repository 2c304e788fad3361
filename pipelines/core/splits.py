"""What a split's records are (keys, input rows, labels) and what a model said of them, in the
order the shards stream them; `in_input_order` restores the order of the input."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Split:
    """The truth of a split, one entry per record in stream order (the order predictions come in)."""

    keys: list[str]
    indices: np.ndarray  # each record's row in its input (the order outputs must follow)
    labels: list[tuple[int, ...]]  # all label ids; the first is the main one; () when unlabeled

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def main_labels(self) -> np.ndarray:
        return np.array([labels[0] if labels else -1 for labels in self.labels], np.int64)

    def multi_hot(self, num_classes: int) -> np.ndarray:
        targets = np.zeros((len(self.labels), num_classes), np.float32)
        for row, labels in enumerate(self.labels):
            targets[row, list(labels)] = 1.0
        return targets


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Model outputs for the records of some shards, with each record's key and input row."""

    keys: list[str]
    indices: np.ndarray
    probabilities: np.ndarray

    def in_input_order(self) -> "Predictions":
        """Sorted by input row: shards interleave records, outputs follow the input."""
        order = np.argsort(self.indices, kind="stable")
        return Predictions([self.keys[position] for position in order], self.indices[order],
                           self.probabilities[order])
