"""lab/bench.py: its FLOP count (its quick mode runs as the README shows it, in test_readme)."""

import torch

from helpers import tiny_config
from model import Cascade


def test_the_analytic_flop_count_matches_torch_for_the_matrix_products():
    from torch.utils.flop_counter import FlopCounterMode

    from lab import bench
    config = tiny_config(n_layer=2)
    model = Cascade(config)
    x = torch.randn(2, 16, 50)  # 50 frames: attention as matrix products, which torch counts
    with FlopCounterMode(display=False) as counter:
        model(x, x)[0].sum().backward()
    # torch counts backward as 2x forward for matmuls, except the input gradient of the first layer
    # it cannot skip; we count 3x forward throughout
    assert counter.get_total_flops() <= bench.step_flops(config, 2, 50)
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            model(x, x)
    assert 3 * counter.get_total_flops() == bench.step_flops(config, 2, 50)
