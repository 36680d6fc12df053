"""Test-wide settings: one torch thread, since the suite's models are tiny and CI has 2 cores.

With torch's default thread pool, small models ran ~10x slower whenever another process
(a second pytest worker, a benchmark) shared the cores.
"""

import logging

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _no_log_handler_outlives_its_test():
    """`codream.cli.main` run in process configures the root logger (`basicConfig(force=True)`)
    with a handler on the sys.stderr of that moment: pytest's capture of the test, closed when
    the test ends. Left in place, every later WARNING record of the session, from any thread,
    went to a closed stream ("--- Logging error ---"). Such handlers end with their test."""
    root = logging.getLogger()
    before, level = set(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler not in before:  # not pytest's own
            root.removeHandler(handler)
    root.setLevel(level)
