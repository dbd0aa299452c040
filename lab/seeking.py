"""
What issue 31's experiments on fine levels share (seek_truth, truth_needed): a triplet's fine
levels as the untrained head sees them, and the distance to the truth when the heads seek given
fine levels.
"""

import torch

from cascade_rms import groundtruth
from model import combined_rms


def fine_levels_of(model, triplet):
    """A triplet as the model sees it: input and target frames, the material's Corpus, and the fine
    levels of input, truth and material at the clip's unit level. # fine levels (1, T, fine_bands)"""
    x_in, x_tgt, material, length, truth = triplet
    head, codec = model.stage1.pointer, model.stage1.pointer.codec
    frames = [codec.encode(torch.from_numpy(a)[None]) for a in (x_in, x_tgt, truth, material[:length])]
    level = combined_rms(frames[0], frames[1], model.config.rms_floor)
    corpus = head.describe(torch.from_numpy(material)[None], torch.tensor([length]))
    return frames[:2], corpus, *(head.fine_levels(f / level) for f in (frames[0], frames[2], frames[3]))


def lsd_seeking(model, triplet, frames, corpus, wanted, rate):
    """The log-spectral distance to the truth of the model's output when both heads seek the fine
    levels `wanted` instead of their prediction's. # wanted (1, T, fine_bands)"""
    for stage in (model.stage1, model.stage2):
        stage.pointer.sought_fine = lambda x, f: wanted
    with torch.no_grad():
        out, _ = model(*frames, corpus)
    audio = model.stage1.pointer.codec.decode(out, len(triplet[0]))[0].numpy()
    return groundtruth.log_spectral_distance(audio, triplet[4], rate, model.config.frame_dim)
