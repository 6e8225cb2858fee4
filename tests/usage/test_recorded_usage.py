"""Estimates against real provider-reported usage (the shared folder's recordings, origins in
tests/data/origins.csv; skipped without them).

Every calibration recording's estimate must equal what the provider reported, for the prompt and
for the visible completion, except:

* reasoning models (gpt-5 family, o-series): their hidden reasoning is never in a response, and
  the reported ``reasoning_tokens`` do not always cover it (they come in steps of 64 for some
  models, and are sometimes 0 while a reasoning item was produced). The visible completion is
  then a lower bound, short by less than 64 tokens, never over, and the row says so
  (``reasoning_tokens_not_estimated``);
* the recordings in ``KNOWN_MISSES``, each with why and by how much at most.

The held-out recordings were never used to derive the rules; they are measured (the floor below
only guards against regressions) and bench/bench_accuracy.py prints their table.
"""

from __future__ import annotations

import pytest

from shared_folder import RECORDINGS, missing

if _absent := missing(RECORDINGS):
    pytest.skip(_absent, allow_module_level=True)

from recordings import load_recordings, miss, replay  # noqa: E402
from metering.usage.tokens import is_reasoning_model  # noqa: E402

#: The provider's reasoning_tokens are a multiple of 64 for several reasoning models, so up to 63
#: hidden tokens can be counted as "visible"; an estimate for them may be short by that much.
REASONING_SLACK = 63

# Why a calibration recording is not exact (reasons, then the recordings).
CONVERSATION = "a stored conversation's items are prepended server-side (noted conversation_not_counted)"
NESTED_SCHEMA = (
    "nested/$ref/default tool schemas: the TypeScript rendering is approximated (noted tool_schema_approximated); "
    "the Responses API's rendering of a $ref'd object's properties is not known (~17 short)"
)
RESPONSES_TOOLS = (
    "Responses API with function tools: a token or two of function-call history the rules do not model; "
    "gpt-5 family: forced tool_choice, a system message late in the input and several tools are not modelled"
)
LAUNCH_WEEK = (
    "recorded 2025-03-27, the Responses API's launch week: it billed ~200 tokens more with function tools "
    "(18 more for a plain request) than it has since; one reports no usage at all (0 tokens)"
)
CHAT_TOOLS = "chat tools: a few tokens of framing the rules do not model (several tools, strict schemas, titles/defaults)"
UNEXPLAINED = "no rule explains it; a single recording"
NANO_TITLES = (
    "gpt-4.1-nano with a titled property and a tool result: 2 short since titles are shown and a result's own name is "
    "not (both fitted on 160 crewAI recordings of gpt-4o, gpt-4o-mini and gpt-4.1-mini; exact before by two errors cancelling)"
)

#: name → (max |prompt miss|, max |completion miss|, why). A listed recording that becomes exact
#: must be removed from the list (the test says so), so it only ever shrinks.
PARALLEL_WRAPPER = (
    "gpt-4o-mini with the tool shape whose first-turn requests are all 1 short: exact before by two errors cancelling, "
    "until a parallel call in the history was counted without the single call's extra token (fitted on 10 requests "
    "that were each 1 over, four of them shared calibration rows now exact)"
)

KNOWN_MISSES: dict[str, tuple[int, int, str]] = {
    "davinci--completions--67fd190a": (1, 1, UNEXPLAINED),
    "gpt-3.5--chat-tools-calls--5c5c0b8b": (2, 1, CHAT_TOOLS),
    "gpt-4.1--responses--0f198850": (32, 0, CONVERSATION),
    "gpt-4.1--responses--7d0df4db": (3, 1, UNEXPLAINED),
    "gpt-4.1--responses-tools--572e6b42": (2, 0, RESPONSES_TOOLS),
    "gpt-4.1--responses-tools--8d175eaa": (37, 0, CONVERSATION),
    "gpt-4.1--responses-tools--d98f08cb": (1, 0, RESPONSES_TOOLS),
    "gpt-4.1--responses-tools-calls--3c9c1d61": (1, 0, CONVERSATION),
    "gpt-4.1-mini--responses--fbaf0952": (1, 4, LAUNCH_WEEK),
    "gpt-4.1-nano--chat-tools--14d35704": (2, 0, NANO_TITLES),
    "gpt-4.1-nano--chat-tools--764e791b": (2, 0, NANO_TITLES),
    "gpt-4.1-nano--chat-tools--a79fb9a0": (2, 0, NANO_TITLES),
    "gpt-4.1-nano--chat-tools-calls--5f97b874": (1, 1, CHAT_TOOLS),
    "gpt-4.1-nano--chat-tools-parallel--9def73c9": (1, 1, CHAT_TOOLS),
    "gpt-4o--chat--42a9c5db": (1, 0, UNEXPLAINED),
    "gpt-4o--chat-stream-tools-calls--2c856b99": (3, 0, NESTED_SCHEMA),
    "gpt-4o--chat-stream-tools-parallel--c3a4fbb5": (1, 0, NESTED_SCHEMA),
    "gpt-4o--chat-stream-tools-parallel--ef987dab": (4, 0, NESTED_SCHEMA),
    "gpt-4o--chat-tools--aa5f0392": (8, 0, CHAT_TOOLS),
    "gpt-4o--chat-tools-calls--1cf4a817": (1, 0, CHAT_TOOLS),
    "gpt-4o--responses--3dce578f": (18, 0, LAUNCH_WEEK),
    "gpt-4o--responses-stream-tools--df49b73f": (213, 0, LAUNCH_WEEK),
    "gpt-4o--responses-stream-tools-parallel--1a77e492": (0, 16, RESPONSES_TOOLS),
    "gpt-4o--responses-stream-tools-parallel--df54f4a0": (215, 0, LAUNCH_WEEK),
    "gpt-4o--responses-tools--2e01f2f0": (198, 0, LAUNCH_WEEK),
    "gpt-4o--responses-tools--5b328425": (18, 0, NESTED_SCHEMA),
    "gpt-4o--responses-tools--5d2ed6de": (1, 0, RESPONSES_TOOLS),
    "gpt-4o--responses-tools-calls--0f0f8b4b": (17, 0, NESTED_SCHEMA),
    "gpt-4o--responses-tools-calls--7efa08eb": (1, 0, RESPONSES_TOOLS),
    "gpt-4o--responses-tools-parallel--be451158": (43, 49, LAUNCH_WEEK),
    "gpt-4o-mini--chat-tools--66dfef46": (1, 1, CHAT_TOOLS),
    "gpt-4o-mini--chat-tools-calls--7a773880": (1, 1, CHAT_TOOLS),
    "gpt-4o-mini--chat-tools-parallel--cfee4868": (1, 0, PARALLEL_WRAPPER),
    "gpt-4o-mini--chat-tools-calls--86b0f0eb": (63, 0, CHAT_TOOLS),
    "gpt-4o-mini--responses-tools-parallel--b8e27985": (1, 0, RESPONSES_TOOLS),
    "gpt-5--responses--59a7fb0b": (4, 0, UNEXPLAINED),
    "gpt-5--responses-tools--3651167f": (8, 0, RESPONSES_TOOLS),
    "gpt-5--responses-tools-calls--7bd122bc": (5, 0, RESPONSES_TOOLS),
    "gpt-5--responses-tools-calls--a2dabb71": (10, 0, RESPONSES_TOOLS),
    "gpt-5-mini--chat-tools--14dc3e8c": (6, 0, CHAT_TOOLS),
    "gpt-5.x--chat-tools--7d7e61f3": (5, 0, CHAT_TOOLS),
    "gpt-5.x--chat-tools-calls--23658950": (5, 0, CHAT_TOOLS),
    "gpt-5.x--responses-tools--3544626e": (17, 0, RESPONSES_TOOLS),
    "o-series--chat--27ab2bd6": (8, 0, UNEXPLAINED),
}

CALIBRATION = load_recordings("calibration")
HELDOUT = load_recordings("heldout")


def _completion_ok(recording, completion_miss: int, bound: int) -> bool:
    if abs(completion_miss) <= bound:
        return True
    return is_reasoning_model(recording.model) and -REASONING_SLACK <= completion_miss <= 0


def test_there_are_several_dozen_recordings_of_every_major_shape():
    shapes = {r.shape for r in CALIBRATION} & {r.shape for r in HELDOUT}
    assert len(CALIBRATION) >= 150 and len(HELDOUT) >= 60
    assert {"chat", "chat-stream", "chat-tools-calls", "chat-tools-parallel", "chat-n2", "responses", "responses-tools-calls"} <= shapes
    assert not {r.name for r in CALIBRATION} & {r.name for r in HELDOUT}


@pytest.mark.parametrize("recording", CALIBRATION, ids=lambda r: r.name)
def test_calibration_recording_is_exact_or_a_known_bounded_miss(recording):
    result = miss(recording)
    prompt_bound, completion_bound, why = KNOWN_MISSES.get(recording.name, (0, 0, ""))
    assert abs(result.prompt) <= prompt_bound, f"prompt off by {result.prompt:+d} (reported {recording.reported_prompt}) {why}"
    assert _completion_ok(recording, result.completion, completion_bound), (
        f"completion off by {result.completion:+d} (visible reported {recording.reported_visible_completion}) {why}"
    )
    if recording.name in KNOWN_MISSES:
        reasoning_only = is_reasoning_model(recording.model) and result.prompt == 0 and -REASONING_SLACK <= result.completion <= 0
        assert not (result.exact or reasoning_only), "now within the rules: remove it from KNOWN_MISSES"


def test_known_misses_name_calibration_recordings():
    assert set(KNOWN_MISSES) <= {r.name for r in CALIBRATION}


@pytest.mark.parametrize("recording", [r for r in CALIBRATION + HELDOUT if is_reasoning_model(r.model)], ids=lambda r: r.name)
def test_reasoning_estimates_say_they_are_a_lower_bound(recording):
    usage = replay(recording)
    assert "reasoning_tokens_not_estimated" in usage.notes
    # the hidden reasoning is billed as completion: the estimate never exceeds the whole completion
    assert usage.completion_tokens <= recording.reported_completion


def test_estimates_are_marked_estimated_not_reported():
    """Replaying strips the usage: none of these numbers may come from the provider."""
    for recording in CALIBRATION[:40]:
        assert replay(recording).source in ("estimated", "partial")


#: Held-out recordings exact when the rules were written (bench/bench_accuracy.py shows which).
#: Measured, not tuned: a drop means a rule change made real traffic worse.
#: 42 since chat shows property titles (round three): one gpt-4.1-nano crewAI row is 2 short as
#: its three calibration siblings are (NANO_TITLES), while other held-out tool rows came closer.
HELDOUT_EXACT_FLOOR = 42  # of 85; 11 before these rules, 41 before the Responses tools rules, 43 before titles


def test_heldout_accuracy_does_not_regress():
    exact = sum(1 for recording in HELDOUT if miss(recording).exact)
    assert exact >= HELDOUT_EXACT_FLOOR, f"{exact} of {len(HELDOUT)} held-out recordings exact"


# --- further recordings (../shared/recordings-round3 or METERING_EXTRA_RECORDINGS; docs/estimates-sources.md) ---

EXTRA_CALIBRATION = load_recordings("calibration", extra=True)
EXTRA_HELDOUT = load_recordings("heldout", extra=True)
needs_extra = pytest.mark.skipif(not EXTRA_CALIBRATION, reason="no further recordings: ../shared/recordings-round3 "
                                 "is absent and METERING_EXTRA_RECORDINGS names no folder")


def _within(recordings, bound: int) -> int:
    count = 0
    for recording in recordings:
        result = miss(recording)
        completion = result.completion
        if is_reasoning_model(recording.model) and -REASONING_SLACK <= completion <= 0:
            completion = 0
        count += abs(result.prompt) <= bound and abs(completion) <= bound
    return count


@needs_extra
def test_azure_chat_completions_are_exact_with_the_terminator_token():
    """Issue #29's one-token gap: Azure Chat Completions recordings of non-reasoning models have
    their completion exact, with the terminator token from AZURE_TERMINATOR_SINCE and without it
    before (41 of 46 when the rule was written, 23 before it; the others: a gpt-4o-mini answer of
    January 2026 billed without it, two gpt-4o-mini answers to tool results with a response format
    4 short, a gpt-35-turbo one of 2024 19 short, a gpt-5.x chat one 6 short)."""
    azure = [r for r in EXTRA_CALIBRATION + EXTRA_HELDOUT + CALIBRATION + HELDOUT
             if r.provider == "azure" and r.endpoint == "chat.completions" and not is_reasoning_model(r.model)]
    exact = [r.name for r in azure if miss(r).completion == 0]
    assert len(azure) >= 40 and len(exact) >= len(azure) - 5, sorted({r.name for r in azure} - set(exact))


#: Measured when the round-three rules were written (bench/bench_accuracy.py): floors against
#: regressions of rules on real traffic, not targets.
#: (the second pass of round three: property titles, results' names, OpenAI's terminator window,
#: patch-billed images and gpt-4.1's empty parameters; the first pass had 513/671 and 139/189)
EXTRA_FLOORS = {"calibration": (598, 746), "heldout": (151, 190)}  # (exact, within 3 tokens)


@needs_extra
@pytest.mark.parametrize("split", ["calibration", "heldout"])
def test_further_recordings_accuracy_does_not_regress(split):
    recordings = EXTRA_CALIBRATION if split == "calibration" else EXTRA_HELDOUT
    exact, near = _within(recordings, 0), _within(recordings, 3)
    floor_exact, floor_near = EXTRA_FLOORS[split]
    assert exact >= floor_exact and near >= floor_near, f"{exact} exact, {near} within 3 of {len(recordings)}"
