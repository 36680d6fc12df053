"""Test-wide settings: one torch thread, since the suite's models are tiny and CI has 2 cores.

With torch's default thread pool, small models ran ~10x slower whenever another process
(a second pytest worker, a benchmark) shared the cores.
"""

import torch

torch.set_num_threads(1)
