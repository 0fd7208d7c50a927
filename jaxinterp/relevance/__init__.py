"""Relevance rules as rewrites of a traced function: the graph of units (`graph`), the engine
that walks it backward under a method's rules (`engine`), and zennit's LRP rules and composites
(`lrp`), AttnLRP's and CP-LRP's rules for any traced transformer (`attn_lrp`). `ji.deeplift`,
`ji.deeplift_shap` and `ji.lrp` are built on them."""

from jaxinterp.relevance import attn_lrp, engine, graph, lrp
from jaxinterp.relevance.engine import UnsupportedPrimitive
from jaxinterp.relevance.graph import trace
from jaxinterp.relevance.lrp import (COMPOSITES, AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass,
                                     WSquare, ZBox, ZPlus, composite)

__all__ = ["COMPOSITES", "AlphaBeta", "Epsilon", "Flat", "Gamma", "Norm", "Pass",
           "UnsupportedPrimitive", "WSquare", "ZBox", "ZPlus", "attn_lrp", "composite", "engine",
           "graph", "lrp", "trace"]
