"""The kept counts of prompt texts (tokens._prompt_counts): a request counts the same with and without
them, they hold digests not texts, an answer is never kept, and no sender can grow them."""

from __future__ import annotations

import pytest

from metering.usage import tokens
from metering.usage.sse import RebuiltChoice, RebuiltStream
from metering.usage.tokens import COUNT_CACHE_ENTRIES, COUNT_CACHE_SHORTEST, count_chat_prompt, count_completion

SYSTEM = "You are a customer-care agent for Contoso Energy. Be polite, never promise refunds, and escalate billing disputes."


def _request(user: str) -> dict:
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]}


@pytest.fixture()
def empty_tables(monkeypatch):
    monkeypatch.setattr(tokens, "_prompt_counts", {})
    return tokens._prompt_counts


def test_a_repeated_prompt_counts_the_same_as_the_first_time(empty_tables):
    users = ["Draft a reply to a customer who was billed twice for October and wants the charge reversed.",
             "¿Puedes resumir este informe de ventas en tres frases para el equipo de dirección? " * 3,
             "请把这段会议记录整理成行动项清单，并标出负责人。" * 4, "\ud800 a lone surrogate " * 8]
    first = [count_chat_prompt(_request(user), "gpt-4o") for user in users]
    assert empty_tables["o200k_base"], "prompt texts of 64 characters or more are kept"
    assert [count_chat_prompt(_request(user), "gpt-4o") for user in users] == first
    for key in empty_tables["o200k_base"]:
        empty_tables["o200k_base"][key] = 0
    # a kept count is what is used: a table that lied would show here (the check above is not vacuous)
    assert [count_chat_prompt(_request(user), "gpt-4o") for user in users] != first


def test_counts_are_kept_per_encoding_and_hold_no_text(empty_tables):
    count_chat_prompt(_request("Summarise the attached quarterly cost report in five bullet points for the board."), "gpt-4")
    count_chat_prompt(_request("Summarise the attached quarterly cost report in five bullet points for the board."), "gpt-4o")
    assert set(empty_tables) == {"cl100k_base", "o200k_base"}
    for table in empty_tables.values():
        assert all(type(key) is bytes and len(key) == 16 for key in table)


def test_short_texts_and_answers_are_not_kept(empty_tables):
    count_chat_prompt({"messages": [{"role": "user", "content": "x" * (COUNT_CACHE_SHORTEST - 1)}]}, "gpt-4o")
    assert not empty_tables.get("o200k_base")
    answer = RebuiltStream(kind="chat.completions", choices=(RebuiltChoice(index=0, text="An answer of some length. " * 20),))
    assert count_completion(answer, "gpt-4o").tokens > 0
    assert not empty_tables.get("o200k_base")


def test_the_table_never_grows_past_its_bound(empty_tables):
    for n in range(COUNT_CACHE_ENTRIES + 50):
        tokens._Counter("gpt-4o").text(f"a distinct prompt text number {n:08d} that is long enough to be kept")
    assert 0 < len(empty_tables["o200k_base"]) <= COUNT_CACHE_ENTRIES
