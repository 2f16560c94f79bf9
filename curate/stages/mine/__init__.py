"""Mining stages: ``mine.positives`` and ``mine.negatives``, both writing the one ``pairs`` table.

How positives and negatives share the ``pairs`` schema (anchor_id, positive_id,
positive_kind, positive_score, class_pair, negative_ids, negative_scores):

* a **positive row** (mine.positives): one per (anchor, partner, kind);
  ``positive_kind`` is set (near_duplicate | nn | adjacent_slice | same_label |
  cross_class), ``positive_score`` is its similarity, ``class_pair`` is set for
  cross_class, ``negative_ids`` / ``negative_scores`` are null;
* a **negative row** (mine.negatives): exactly one per kept anchor;
  ``negative_ids`` / ``negative_scores`` hold its hard negatives, hardest first
  (an empty list when every candidate was rejected); ``positive_kind`` is null,
  and ``positive_id`` / ``positive_score`` record the reference positive used by
  the margin guard (null id: the default score, the anchor's own view).

Select one kind with ``pc.is_valid(pairs["positive_kind"])`` or
``pc.is_valid(pairs["negative_ids"])``. Each mining stage passes the other
kind's upstream rows through, so the latest ``pairs`` table (what ``shard`` reads)
always holds both, whichever order the two stages run in.
"""
