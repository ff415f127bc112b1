"""Coverage: an audit over the whole sample set, one simulated client per batch (issue 10 item 1).

``split`` draws the samples (``--samples``) and cuts them into client batches; ``combine`` turns per-batch
audits into per-sample records, the recognised fraction with its Clopper-Pearson interval and the scan's one
verdict (``metrics.stats`` computes the interval); ``checkpoint`` is what ``scan --resume`` continues from. Imports no
torch at its top: the report layer reads the records.
"""

from ..metrics.stats import CONFIDENCE, clopper_pearson

__all__ = ["CONFIDENCE", "clopper_pearson"]
