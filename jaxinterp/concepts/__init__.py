"""What units and layers mean: dissection, top-activating images, neighbours, 2-D maps, TCAV."""

from jaxinterp.concepts import data, figures
from jaxinterp.concepts.data import CATEGORIES, CONCEPTS, batches, concept_maps, gather
from jaxinterp.concepts.dissection import Dissection, dissect, summary
from jaxinterp.concepts.embedding import embed_2d, features, nearest_neighbors, pca
from jaxinterp.concepts.patches import ReceptiveField, TopActivating, receptive_field, top_activating
from jaxinterp.concepts.tcav import TCAV, tcav

__all__ = ["CATEGORIES", "CONCEPTS", "Dissection", "ReceptiveField", "TCAV", "TopActivating",
           "batches", "concept_maps", "data", "figures", "gather", "dissect", "embed_2d", "features", "nearest_neighbors",
           "pca", "receptive_field", "summary", "tcav", "top_activating"]
