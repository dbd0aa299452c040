"""
Which programs two SoundFonts play with the very same samples (sf_GMbank shares most of
TimGM6mb's): a SoundFont "never heard" is only as new as the samples it does not share.

    python -m lab.shared_samples A.sf2 B.sf2
"""

import argparse
import os
import sys

import numpy as np

from cascade_rms import scores, soundfont


def shared_samples(first, second, key=60, rate=16000):
    """Which melodic programs two SoundFonts play with the same waveform (correlation >= 0.98 over
    one second of a note): a SoundFont 'never heard' is only as new as the samples it does not share."""
    synths = [soundfont.Synthesizer(path, scores.MELODIC_PROGRAMS, rate) for path in (first, second)]
    score, same = soundfont.one_note(key, 1.0), []
    for program in scores.MELODIC_PROGRAMS:
        a, b = (synth.play(score, program, rate).astype(np.float64) for synth in synths)
        if np.dot(a, b) >= 0.98 * np.sqrt(np.dot(a, a) * np.dot(b, b)):
            same.append(program)
    print(f"{os.path.basename(first)} and {os.path.basename(second)} play key {key} with the same samples on "
          f"{len(same)} of {len(scores.MELODIC_PROGRAMS)} melodic programs: {same}")


def main(argv):
    parser = argparse.ArgumentParser(prog="python -m lab.shared_samples", description=__doc__.strip().splitlines()[0])
    parser.add_argument("soundfonts", nargs=2, metavar="SF2", help="the two SoundFonts")
    shared_samples(*parser.parse_args(argv).soundfonts)


if __name__ == "__main__":
    main(sys.argv[1:])
