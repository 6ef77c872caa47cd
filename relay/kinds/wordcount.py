"""``wordcount``: a kind with a typed payload, the example docs/make-it-yours.md walks through.

The payload is a ``bunnyrelay.v1.WordCountRequest`` (proto/bunnyrelay/v1/wordcount.proto)
and the output a ``bunnyrelay.v1.WordCountResult``.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from bunnyrelay.v1.wordcount_pb2 import WordCountRequest, WordCountResult, WordFrequency
from relay.kinds.handler import InvalidPayload, JobInput
from relay.kinds.typed import typed_kind

TOP_MAX = 100
"""The most words a result lists: the output stays small whatever the text."""


def count_words(text: str, top: int) -> WordCountResult:
    """Count the words of ``text`` and list the ``top`` most common."""
    counts = Counter(word.casefold() for word in text.split())
    # Most frequent first; among equals, alphabetical, so the same text gives the same output.
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return WordCountResult(
        words=sum(counts.values()),
        distinct=len(counts),
        most_common=[WordFrequency(word=word, count=count) for word, count in ranked],
    )


@typed_kind("wordcount", WordCountRequest)
async def wordcount(request: WordCountRequest, job: JobInput) -> WordCountResult:
    """Count the words of ``request.text``."""
    if request.top > TOP_MAX:
        raise InvalidPayload(f"wordcount lists at most {TOP_MAX} words; top is {request.top}")
    # Off the event loop: a text of a few MiB takes long enough to hold up other jobs.
    return await asyncio.to_thread(count_words, request.text, request.top)
