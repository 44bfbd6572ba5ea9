"""The steps of a continual-learning cycle, one concern per module, as plain functions over
a Workspace. The cycle driver (``kcm.cycle``) calls them in order, in this process or as
Prefect tasks (``flows/``); the DVC stages (``kcm.stages``) run the same driver.

ingest -> validate -> route -> call_large (in chunks) -> deliver -> learn -> evaluate
       -> commit (the gate, one ledger write) -> publish (plots, MLflow, aliases)
"""

from kcm.steps.answer import assemble, call_large, route
from kcm.steps.commit import commit
from kcm.steps.deliver import deliver_answers
from kcm.steps.evaluate import evaluate
from kcm.steps.inbox import ingest
from kcm.steps.intake import bootstrap, feed
from kcm.steps.learn import learn, load_baseline
from kcm.steps.publish import publish, unpublished
from kcm.steps.registry_ops import lineage, promote, rollback, sync_champion
from kcm.steps.validate import record_failure, validate

__all__ = [
    "assemble",
    "bootstrap",
    "call_large",
    "commit",
    "deliver_answers",
    "evaluate",
    "feed",
    "ingest",
    "learn",
    "lineage",
    "load_baseline",
    "promote",
    "publish",
    "record_failure",
    "rollback",
    "route",
    "sync_champion",
    "unpublished",
    "validate",
]
