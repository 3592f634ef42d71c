"""Evaluation (method §5, §10): what the papers' tables measure, and how a reader reviews it.

- :mod:`.classification`: per-label crop metrics (paper Table 3).
- :mod:`.pointing`: the pointing game on prediction and correlation maps (paper Table 4).
- :mod:`.detection`: boxes from thresholded maps, IoU > 0.3 matching, FROC (second paper).
- :mod:`.report`: the tables as CSV and Markdown.
- :mod:`.verdicts`: the reader's verdict CSV (atomic, resumable) and reader state.
- :mod:`.review`: a reader's pass over a split (:class:`~.review.Review`): list, filter,
  navigation, status, prefetch, verdicts and saved state; the test-set reader binds it.
- :mod:`.split_run`: the runner every per-image job over a split shares: file checks,
  images left out, torchrun sharding, cache skip, rank-0 merge.
- :mod:`.runner`: ``correlax evaluate``: per-image cache, resume, the tables.
- :mod:`.compare`: ``correlax compare``: several map methods scored the same way.

Nothing here imports napari or Qt; torch is imported only where a model runs.
"""
