"""Adversarial examples over `ji.optvis.optimize`: FGSM, PGD (L∞, L2), robustness curves."""

from jaxinterp.adversarial.attacks import NORMS, Robustness, fgsm, pgd, robustness

__all__ = ["NORMS", "Robustness", "fgsm", "pgd", "robustness"]
