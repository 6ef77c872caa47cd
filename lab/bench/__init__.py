"""``make bench``: bunny and relay measured against raw grpc.aio in the same run.

Every load runs in a process of its own, so that each side's CPU time and peak
memory are its own:

- :mod:`.rawecho`: the baseline, a minimal grpc.aio servicer of the same proto
  and a minimal client driven by the same closed loop as ``bunny bench``;
- :mod:`.floor`: the same pair with only the per-call telemetry the conventions ask
  for, the most an instrumented service can reach;
- :mod:`.zone`: the lab DNS server with the names the benchmarks ask for;
- :mod:`.dnsbench`: bunny's resolver against bare aiodns, dnspython and getaddrinfo;
- :mod:`.ghz`: ghz, an outside load generator, against relay;
- :mod:`.children`: starting and reading those processes; :mod:`.procstat`: their CPU
  and memory from /proc, and the machine's settings;
- :mod:`.run`: the cases, the rounds they run in (:mod:`.rounds`: each ratio within a
  round, then the median) and the table (:mod:`.report`), written to docs/benchmarks.md.

Nothing here asserts a timing: it prints ratios against the baseline it measured.
"""
