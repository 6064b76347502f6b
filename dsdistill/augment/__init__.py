"""Augmentation and preprocessing: DSA (differentiable Siamese augmentation) and ZCA whitening."""

from .dsa import DEFAULT_STRATEGY, DIGIT_STRATEGY, DSA, DSAParams, strategy_for
from .zca import ZCA

__all__ = ["DSA", "DSAParams", "DEFAULT_STRATEGY", "DIGIT_STRATEGY", "ZCA", "strategy_for"]
