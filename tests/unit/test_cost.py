"""What an answer costs: the price arithmetic, the token counts, and what each backend
charges (issue #24)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kcm.config import OpenAIConfig, ReplayConfig
from kcm.cost import Price, chat_tokens, count_tokens, per_thousand, resolve_price
from kcm.data.batch import Task
from kcm.models.large.openai import OpenAIChatModel
from kcm.models.large.prompt import chat_messages
from kcm.models.large.replay import ReplayModel
from tests.llm_server import LLMServer, prompt_tokens

FRUIT = ["apple", "banana", "cherry"]


def _task() -> Task:
    return Task(kind="text", label_names=tuple(FRUIT), text_col="text")


def test_the_price_of_tokens_and_calls() -> None:
    p = Price(input_per_1m=30.0, output_per_1m=60.0, per_call=0.001)
    assert p.of(1_000, 10) == pytest.approx(0.03 + 0.0006 + 0.001)
    assert p.of(2_000, 20, calls=2) == pytest.approx(2 * p.of(1_000, 10))
    assert Price().free and not p.free
    assert per_thousand(0.5, 250) == pytest.approx(2.0) and per_thousand(1.0, 0) is None


def test_published_prices_fill_what_is_not_configured() -> None:
    gpt4 = resolve_price(None, None, 0.0, "USD", "gpt-4")
    assert (gpt4.input_per_1m, gpt4.output_per_1m, gpt4.source) == (30.0, 60.0, "published:gpt-4")
    dated = resolve_price(None, None, 0.0, "USD", "gpt-4o-mini-2024-07-18")
    assert (dated.input_per_1m, dated.output_per_1m) == (0.15, 0.6)
    own = resolve_price(1.0, None, 0.0, "EUR", "gpt-4")  # the output price stays published
    assert (own.input_per_1m, own.output_per_1m, own.currency) == (1.0, 60.0, "EUR")
    assert own.source == "configured"
    local = resolve_price(None, None, 0.0, "USD", None)
    assert local.free and local.source == "none"  # a local model costs nothing by default


def test_tokens_are_counted_with_gpt4s_tokenizer() -> None:
    """cl100k_base's ids for a sentence, as OpenAI's tokenizer gives them (checked against an
    independent implementation, bpe-openai)."""
    from kcm.cost import encoding

    assert encoding().encode("Hello world, how are you?") == [
        9906,
        1917,
        11,
        1268,
        527,
        499,
        30,
    ]
    assert count_tokens("Hello world, how are you?") == 7
    msgs = [{"role": "system", "content": "hi"}, {"role": "user", "content": "yo"}]
    assert chat_tokens(msgs) == 3 + (3 + 1 + 1) + (3 + 1 + 1) == prompt_tokens(msgs)


@pytest.mark.parametrize("usage", [True, False])
def test_openai_tokens_and_dollars_equal_what_the_endpoint_billed(usage: bool) -> None:
    """With usage reported, kcm takes it; without, it counts the same tokens itself (marked
    estimated). Either way the dollars are the endpoint's bill at the price list."""
    with LLMServer(FRUIT, usage=usage, nonsense=False) as srv:
        m = OpenAIChatModel(_task(), OpenAIConfig(base_url=srv.base_url, model="gpt-4"))
        m.price = resolve_price(None, None, 0.0, "USD", "gpt-4")
        hints = np.full((4, 3), 1 / 3)
        out = m.predict_proba(["an apple", "a banana", "some cherry", "an apple"], hints)
        billed = dict(srv.billed)
    assert out.ok.all() and billed["answered"] == 3  # the repeat was sent once
    assert m.ledger.prompt_tokens == billed["prompt_tokens"]
    assert m.ledger.completion_tokens == billed["completion_tokens"]
    assert m.ledger.estimated_tokens == (0 if usage else 3)
    bill = 30.0 * billed["prompt_tokens"] / 1e6 + 60.0 * billed["completion_tokens"] / 1e6
    assert m.ledger.cost == pytest.approx(bill)
    assert out.cost is not None and out.cost.sum() == pytest.approx(bill)
    assert out.cost[3] == 0.0  # the repeat cost nothing more
    # the reservation bound is an upper bound of what the call cost
    assert all(m.estimate(x, hints[0]) >= c for x, c in zip(["an apple"], out.cost, strict=False))


def test_a_replayed_answer_is_priced_as_the_prompt_it_would_have_needed(tmp_path) -> None:
    path = tmp_path / "answers.csv"
    pd.DataFrame({"text": ["an apple", "a banana"], "gpt4": ["apple", "banana"]}).to_csv(
        path, index=False
    )
    m = ReplayModel(_task(), ReplayConfig(path=str(path)))
    m.price = resolve_price(None, None, 0.0, "USD", m.priced_model())
    out = m.predict_proba(["an apple", "a banana", "unknown"])
    want = [
        30.0 * chat_tokens(chat_messages(_task(), x, None)) / 1e6 + 60.0 * count_tokens(a) / 1e6
        for x, a in [("an apple", "apple"), ("a banana", "banana")]
    ]
    assert out.cost is not None and out.cost.tolist() == pytest.approx([*want, 0.0])
    assert m.ledger.cost == pytest.approx(sum(want)) and m.ledger.estimated_tokens == 2
    again = m.predict_proba(["an apple"])  # answered from the store: nothing paid again
    assert again.cost is not None and again.cost.tolist() == [0.0]
