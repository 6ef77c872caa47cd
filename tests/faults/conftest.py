"""Hypothesis's settings for the fault tests.

Hypothesis runs a bounded number of examples, derandomized so that CI and a
developer see the same ones (``HYPOTHESIS_PROFILE=dev`` explores further).
"""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

# Hypothesis keeps caches in .hypothesis/ under the working directory; not in the work tree.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "bunnyrelay-hypothesis"))

settings.register_profile(
    "ci",
    max_examples=60,
    derandomize=True,
    database=None,  # nothing written into the work tree
    deadline=timedelta(seconds=5),
    # One relay serves every example of a test, which is the point, not an accident.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "dev",
    parent=settings.get_profile("ci"),
    max_examples=500,
    derandomize=False,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
