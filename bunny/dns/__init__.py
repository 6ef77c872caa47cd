"""bunny's DNS: its own resolver, so that every lookup is retried, cached and traced.

One idea per module, each importing only those above it in this list:

- :mod:`~bunny.dns.model`: what a lookup returns (queries, resolutions).
- :mod:`~bunny.dns.resolvconf`: a resolv.conf read the way glibc reads it.
- :mod:`~bunny.dns.hosts`: the hosts file, read before DNS as glibc's ``files dns`` does.
- :mod:`~bunny.dns.settings`: how bunny resolves, from flags, resolv.conf and the hosts file.
- :mod:`~bunny.dns.names`: which names a lookup asks (search list, ndots) and which it refuses.
- :mod:`~bunny.dns.ares`: c-ares through aiodns on the event loop, and a ledger of
  what c-ares' own query cache holds.
- :mod:`~bunny.dns.answers`: an answer judged: addresses and TTL, or the typed failure.
- :mod:`~bunny.dns.cache`: bunny's answer cache (TTL, serve-stale, negative caching).
- :mod:`~bunny.dns.resolver`: the resolver: cache, then one lookup per name in flight,
  then the candidates asked in turn.
- :mod:`~bunny.dns.tracing`: spans and the lookup metric, wrapped around the resolver.
- :mod:`~bunny.dns.alivequery` and :mod:`~bunny.dns.liveness`: is a silent hop down, or up
  with a silent upstream? A question it answers itself tells them apart.

Nothing here imports the rest of bunny except its error tree (:mod:`bunny.errors`)
and its retry policy (:mod:`bunny.retry`).
"""
