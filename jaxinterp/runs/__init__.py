"""Data-set-scale runs: attribution over a folder or `shapes:N`, a resumable chunked store,
faithfulness metrics, and the HTML report."""

from jaxinterp.runs import report, store
from jaxinterp.runs.attribute import attribute_dataset, initialize_distributed
from jaxinterp.runs.source import Source, open_source
from jaxinterp.runs.store import LazyArray, Run, open_run

__all__ = ["LazyArray", "Run", "Source", "attribute_dataset", "initialize_distributed",
           "open_run", "open_source", "report", "store"]
