"""
Every melodic program's notes played by symusic's synthesizer and by ours: which are in tune
(docs/LOG.md).

    python -m lab.tuning                        # TimGM6mb
    python -m lab.tuning --soundfonts=A.sf2,B.sf2
"""

import argparse
import os
import sys

import numpy as np

from cascade_rms import scores, soundfont


def strongest_partial_cents(audio, key, rate):
    """How far, in cents, a note's strongest partial lies from the nearest whole multiple (1 and up)
    of the written key's frequency: near 0 where the note sounds as written."""
    power = np.abs(np.fft.rfft(audio * np.hanning(len(audio)), 8 * rate)) ** 2
    multiple = (np.argmax(power) / 8) / (440 * 2 ** ((key - 69) / 12))
    return 1200 * abs(np.log2(multiple / max(round(multiple), 1))) if multiple > 0 else np.inf  # silence: no pitch


def tuning(soundfonts, keys=(48, 60, 72), rate=16000):
    """For each SoundFont: how many of the melodic programs play every key in `keys` in tune (the
    strongest partial within 30 cents of a harmonic) with symusic's synthesizer and with ours
    (lib/soundfont.py), and which programs symusic plays out of tune."""
    import symusic

    for path in soundfonts:
        theirs, ours = symusic.Synthesizer(path, sample_rate=rate), soundfont.Synthesizer(path, scores.MELODIC_PROGRAMS, rate)
        out_of_tune = {"symusic": [], "ours": []}
        for program in scores.MELODIC_PROGRAMS:
            for name, play in (("symusic", lambda s: np.asarray(theirs.render(s, stereo=False)).reshape(-1)),
                               ("ours", lambda s: ours.play(s, program))):
                for key in keys:  # symusic plays the track's program
                    audio = np.nan_to_num(play(soundfont.one_note(key, 1.5, program))[rate // 10 : rate // 10 + rate]
                                          .astype(np.float64))
                    if strongest_partial_cents(audio, key, rate) > 30:
                        out_of_tune[name].append(program)
                        break
        n = len(scores.MELODIC_PROGRAMS)
        print(f"{os.path.basename(path)}: programs playing keys {list(keys)} in tune: symusic {n - len(out_of_tune['symusic'])}"
              f"/{n}, ours {n - len(out_of_tune['ours'])}/{n}; out of tune with symusic: {out_of_tune['symusic']}; "
              f"with ours: {out_of_tune['ours']}")


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m lab.tuning", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--soundfonts", default=soundfont.default_soundfont(), help="comma-separated (TimGM6mb by default)")
    tuning(parser.parse_args(argv).soundfonts.split(","))


if __name__ == "__main__":
    main(sys.argv[1:])
