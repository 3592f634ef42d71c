"""Evaluation (method §5, §10): what the papers' tables measure, and how a reader reviews it.

- :mod:`.classification`: per-label crop metrics (paper Table 3).
- :mod:`.pointing`: the pointing game on prediction and correlation maps (paper Table 4).
- :mod:`.detection`: boxes from thresholded maps, IoU > 0.3 matching, FROC (second paper).
- :mod:`.report`: the tables as CSV and Markdown.
- :mod:`.verdicts`: the reader's verdict CSV (atomic, resumable) and reader state.
- :mod:`.review`: a reader's pass over a split (:class:`~.review.Review`): list, filter,
  navigation, status, prefetch, verdicts and saved state; the test-set reader binds it.
- :mod:`.runner`: ``correlax evaluate``: per-image cache, resume, torchrun sharding.

Nothing here imports napari or Qt; torch is imported only where a model runs.
"""
