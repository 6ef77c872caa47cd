"""Job kinds: what relay can run, one file per kind in this folder.

Adding a kind is adding a file here: ``relay serve`` runs every kind it finds
in ``relay/kinds/`` (:meth:`relay.kinds.registry.Registry.builtin`). A kind is
an ``async`` function from a :class:`relay.kinds.handler.JobInput` to output
bytes, named with the :func:`relay.kinds.handler.kind` decorator::

    # relay/kinds/upper.py
    from relay.kinds.handler import InvalidPayload, JobInput, kind

    @kind("upper")
    async def upper(job: JobInput) -> bytes:
        if not job.payload:
            raise InvalidPayload("upper needs a payload")
        return job.payload.upper()

A kind whose payload and output are protobuf messages of the contract uses
:func:`relay.kinds.typed.typed_kind` instead (``wordcount.py`` is one);
docs/make-it-yours.md walks through adding one, end to end.

What a handler may raise, and how relay answers it, is told in
:mod:`relay.kinds.handler`.
"""
