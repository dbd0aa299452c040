"""cascade_rms/quality.py: the quality metrics give the known answers."""

from helpers import demo_validation_pairs
from cascade_rms import baselines
from model import CascadeConfig


def test_quality_metrics_give_the_known_answers_on_copies_random_grains_and_grids():
    import numpy as np

    from cascade_rms import quality
    rng = np.random.default_rng(0)
    grid = 0.128
    onset_f_of_grains = []
    for x_in, x_tgt, _ in demo_validation_pairs(3):
        heard_in, heard_tgt = quality.features(x_in, 16000), quality.features(x_tgt, 16000)
        copy = quality.against_sources(quality.features(x_in, 16000), heard_in, heard_tgt, grid)
        assert copy["chroma_in"] > 1 - 1e-6 and copy["onset_f_in"] == 1.0
        assert quality.frechet_distance(heard_tgt, heard_tgt) < 1e-6 * quality.frechet_distance(heard_in, heard_tgt)
        grains = baselines.random_grains(x_in, x_tgt, CascadeConfig(), rng)
        onset_f_of_grains.append(quality.against_sources(quality.features(grains, 16000), heard_in, heard_tgt, grid)["onset_f_in"])
        assert 0.1 < copy["chroma_in"] - quality.chroma_similarity(heard_tgt, heard_in)  # the next segment plays other chords
    assert max(onset_f_of_grains) < 1.0 and np.median(onset_f_of_grains) < 0.8, onset_f_of_grains  # measured 0.45 over 44 pairs
    on, off = np.arange(10) * grid + 0.004, np.arange(10) * grid + grid / 2
    assert quality.grid_share(on, grid) == 1.0 and quality.grid_share(off, grid) == 0.0
    assert np.isnan(quality.grid_share(np.zeros(0), grid))
