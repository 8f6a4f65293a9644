"""Named colours: the training palette, the held-out palette and the visual-perturbation palette.

Instructions name objects by colour, so the colour sets are part of the task distribution:
training episodes draw from ``TRAIN_COLORS``; the semantic perturbation draws object colours
(and their names in the instruction) from ``HELDOUT_COLORS``, combinations a policy never saw;
the visual perturbation repaints the table and floor from ``SCENE_COLORS``, which lie outside
the training scene's look but never rename an object.
"""

from __future__ import annotations

import numpy as np

TRAIN_COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.12),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.15, 0.30, 0.90),
    "yellow": (0.92, 0.85, 0.15),
}
HELDOUT_COLORS: dict[str, tuple[float, float, float]] = {
    "purple": (0.55, 0.20, 0.75),
    "orange": (0.95, 0.50, 0.10),
    "cyan": (0.10, 0.80, 0.85),
    "pink": (0.95, 0.45, 0.70),
}
SCENE_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.90, 0.90, 0.92),
    (0.10, 0.10, 0.12),
    (0.30, 0.55, 0.30),
    (0.60, 0.15, 0.45),
    (0.20, 0.45, 0.60),
)


def pick_colors(rng: np.random.Generator, n: int, heldout: bool) -> list[tuple[str, np.ndarray]]:
    """``n`` distinct (name, rgba) pairs from the training or held-out palette."""
    palette = HELDOUT_COLORS if heldout else TRAIN_COLORS
    names = rng.choice(sorted(palette), size=n, replace=False)
    return [(str(name), np.array([*palette[name], 1.0])) for name in names]
