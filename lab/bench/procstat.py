"""What /proc says about a process (CPU time, peak memory) and about the machine.

Linux only, like the rest of the lab. CPU time is ``utime + stime`` from
``/proc/PID/stat`` (every thread of the process, in clock ticks); peak memory is
``VmHWM`` from ``/proc/PID/status``, the high-water mark of the resident set.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")

_PACKAGES = (
    "grpcio",
    "protobuf",
    "opentelemetry-sdk",
    "opentelemetry-exporter-otlp-proto-grpc",
    "aiodns",
    "pycares",
    "dnspython",
    "tenacity",
)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time that process ``pid`` has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: split after its ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _TICKS_PER_S


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise ValueError(f"/proc/{pid}/status has no VmHWM line")


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return one, five, fifteen


@dataclass(frozen=True, slots=True)
class Machine:
    """The settings a benchmark's numbers depend on, printed with them."""

    cpu_model: str
    cores: int
    kernel: str
    python: str
    packages: dict[str, str]

    def as_dict(self) -> dict[str, object]:
        return {
            "cpu_model": self.cpu_model,
            "cores": self.cores,
            "kernel": self.kernel,
            "python": self.python,
            "packages": dict(self.packages),
        }


def machine() -> Machine:
    versions: dict[str, str] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return Machine(
        cpu_model=_cpu_model(),
        cores=os.cpu_count() or 0,
        kernel=platform.release(),
        python=platform.python_version(),
        packages=versions,
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
