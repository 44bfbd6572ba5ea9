"""The steps of a continual-learning cycle, one concern per module, as plain functions over
a Workspace: the loop (``kcm.loop``), the Prefect flows (``flows/``) and the DVC stages
(``kcm.stages``) all call these.

ingest -> validate -> route -> call_large (in chunks) -> learn -> evaluate -> register
"""

from kcm.steps.answer import assemble, call_large, route
from kcm.steps.evaluate import evaluate
from kcm.steps.intake import bootstrap, feed, ingest
from kcm.steps.learn import learn, load_baseline
from kcm.steps.register import register
from kcm.steps.registry_ops import lineage, promote, rollback, sync_champion
from kcm.steps.validate import record_failure, validate

STEPS = ("validate", "route", "call_large", "learn", "evaluate", "register")

__all__ = [
    "STEPS",
    "assemble",
    "bootstrap",
    "call_large",
    "evaluate",
    "feed",
    "ingest",
    "learn",
    "lineage",
    "load_baseline",
    "promote",
    "record_failure",
    "register",
    "rollback",
    "route",
    "sync_champion",
    "validate",
]
