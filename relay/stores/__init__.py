"""relay's idempotency stores, chosen with ``--store`` (``RELAY_STORE``), and what each promises.

Every store answers the same questions (:class:`relay.stores.base.IdempotencyStore`):
has this ``job_id`` run, with the same request, and what did it return? They
differ in what they remember, for how long, and who shares it::

    --store          remembers                  survives                 shared by
    memory           --dedupe-capacity results  nothing                  one process
    sqlite:PATH      --dedupe-retention hours   restarts, SIGKILL,       one relay process
      (default)                                 power loss               (the file is locked)
    redis://H:P/DB   --dedupe-retention hours   restarts of relay; of    every relay using the
                                                Redis: its persistence   same Redis and DB

What holds with each, for a job resubmitted with the same ``job_id`` and request:

- **memory**: within one process lifetime, a finished job is never run again
  (until it is evicted); after a restart, or on another replica, it runs again.
- **sqlite** (default ``sqlite:jobs.sqlite3`` under ``--state-dir``): across
  restarts of one replica, a finished job is never run again: its result is
  committed (fsynced) before relay answers. A job's claim is committed before
  its handler starts; a claim found after a restart belonged to a process that
  died mid-job, so that job runs again, once, when resubmitted (at most once
  more per crash). Replicas do not share it: give each its own volume.
- **redis**: across replicas sharing one Redis, a finished job is never run
  again by any of them, and a running job is not started by another: the
  claim is an atomic ``SET NX`` with a lease that its holder renews; when the
  holder dies, the lease runs out (10 s, or ``?claim_lease=SECONDS`` in the URL)
  and the job runs again, once, on whichever relay gets the resubmission.
  Durability across a restart of Redis itself is Redis's (AOF/RDB) to give.

In every store, a retryable failure (``JobError.retryable``) is not remembered,
and the same ``job_id`` with a different request is ALREADY_EXISTS.
"""
