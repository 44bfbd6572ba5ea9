"""Datasets, the long-tailed stream and the Batch type."""

from kcm.data.batch import NO_LABEL, Batch, Task, batch_from_frame, concat_batches
from kcm.data.sources import load_source, read_table
from kcm.data.stream import (
    GROUPS,
    DataBundle,
    GroupBounds,
    assign_groups,
    build_bundle,
    group_bounds,
    long_tail_counts,
    make_long_tailed,
    split_stream,
    traffic_view,
)

__all__ = [
    "GROUPS",
    "NO_LABEL",
    "Batch",
    "DataBundle",
    "GroupBounds",
    "Task",
    "assign_groups",
    "batch_from_frame",
    "build_bundle",
    "concat_batches",
    "group_bounds",
    "load_source",
    "long_tail_counts",
    "make_long_tailed",
    "read_table",
    "split_stream",
    "traffic_view",
]
