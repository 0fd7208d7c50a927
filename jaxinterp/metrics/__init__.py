"""Attribution metrics as compiled JAX functions: Quantus 0.6's faithfulness, robustness,
localisation, complexity and randomisation families (and Captum's infidelity).

Every metric takes Quantus' arguments, `(m, x, y, attributions_or_method, ...)`, and returns
numpy `[N]` scores (or a NamedTuple with `[N]` `scores` and the curves they summarise). Where a
metric perturbs inputs or re-runs the method, the perturbations are built on device and run in
one compiled program, `batch_size` at a time; random draws come from a `key` or are passed in.
What each metric keeps of Quantus' defaults, and where it reads Quantus differently, is in its
docstring and in docs/site/metrics.md.
"""

from jaxinterp.metrics._common import Curves
from jaxinterp.metrics.complexity import complexity, effective_complexity, sparseness
from jaxinterp.metrics.faithfulness import (faithfulness_correlation, impute, infidelity,
                                            monotonicity_correlation, pixel_flipping,
                                            random_subsets, region_perturbation, road,
                                            sufficiency)
from jaxinterp.metrics.localisation import (attribution_localisation, auc, pointing_game,
                                            relevance_mass_accuracy, relevance_rank_accuracy)
from jaxinterp.metrics.randomisation import (Randomisation, mprt, random_logit,
                                             randomisation_stages, randomize_layers,
                                             smooth_mprt)
from jaxinterp.metrics.robustness import (avg_sensitivity, local_lipschitz_estimate,
                                          max_sensitivity)

# The metrics by family, in the order of Quantus' documentation (the leaderboard reads this).
FAMILIES = {
    "faithfulness": ("faithfulness_correlation", "pixel_flipping", "region_perturbation",
                     "road", "monotonicity_correlation", "infidelity", "sufficiency"),
    "robustness": ("max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate"),
    "localisation": ("pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy",
                     "attribution_localisation", "auc"),
    "complexity": ("sparseness", "complexity", "effective_complexity"),
    "randomisation": ("mprt", "smooth_mprt", "random_logit"),
}

# Whether a higher score is better, per metric (Quantus' `score_direction`; MPRT and random
# logit: lower similarity is better).
HIGHER_IS_BETTER = {
    "faithfulness_correlation": True, "pixel_flipping": False, "region_perturbation": True,
    "road": False, "monotonicity_correlation": True, "infidelity": False, "sufficiency": True,
    "max_sensitivity": False, "avg_sensitivity": False, "local_lipschitz_estimate": False,
    "pointing_game": True, "relevance_mass_accuracy": True, "relevance_rank_accuracy": True,
    "attribution_localisation": True, "auc": True,
    "sparseness": True, "complexity": False, "effective_complexity": False,
    "mprt": False, "smooth_mprt": False, "random_logit": False,
}

__all__ = [
    "Curves", "Randomisation", "FAMILIES", "HIGHER_IS_BETTER",
    "faithfulness_correlation", "pixel_flipping", "region_perturbation", "road",
    "monotonicity_correlation", "infidelity", "sufficiency", "impute", "random_subsets",
    "max_sensitivity", "avg_sensitivity", "local_lipschitz_estimate",
    "pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy",
    "attribution_localisation", "auc",
    "sparseness", "complexity", "effective_complexity",
    "mprt", "smooth_mprt", "random_logit", "randomisation_stages", "randomize_layers",
]
