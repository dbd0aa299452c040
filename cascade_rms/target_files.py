"""
The corpus generate.py draws on: the target song, or every usable file of a folder as
one corpus (what users of mosaicing tools such as CataRT and AudioGuide expect), described
once for the pointer heads and read back at the output's rate and channel count.

Each recording is decoded once into cache_dir, twice over: mono at the model's rate, for
the choice (the cache training uses), and at the output's rate and channel count, for the
render. The corpus's model-rate audio is one more cache file. All three are
memory-mapped, so what a corpus holds in memory is its description: 29 numbers for each
frame of D samples (band power, pitch classes, a mask), and the band levels at each
window's level (docs/generation.md measures how that grows).
"""

import hashlib
import os
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import SILENCE_DB, Corpus

from . import atomic, data

DESCRIBE_FRAMES = 1 << 14  # frames described at once (2 min at 16 kHz): bounds the working memory


@dataclass
class Recording:
    path: str
    first_frame: int  # where the recording's frame 0 lies among the corpus's frames
    n_samples: int  # at the model's rate
    full_audio: np.ndarray  # (n_full, channels) at the output's rate, memory-mapped


def audio_paths(target):
    """The files a --target names: the file itself, or every file under a folder."""
    if os.path.isdir(target):
        return data.audio_files(target)
    if not os.path.isfile(target):
        raise SystemExit(f"--target {target}: no such file or folder")
    return [target]


def memmap(path, channels=None):
    """A cache file of float32 samples, mapped copy-on-write: torch reads it without copying. # (n,) or (n, channels)"""
    audio = np.memmap(path, dtype=np.float32, mode="c")
    return audio if channels is None else audio.reshape(-1, channels)


class TargetFiles:
    """Recordings laid end to end at the model's rate, each recording's audio starting on a
    frame and followed by a gap of silence longer than a grain and its crossfades, so no grain
    of one recording reaches into the next; `corpus` describes every grain of it."""

    def __init__(self, target, model, rate, out_rate, channels, cache_dir, clip_audio=None):
        """target: a file or folder; model: the Cascade whose descriptions the corpus uses, at the
        model's `rate`; clip_audio: the input at that rate, to find its own recording in the
        corpus for the copy guard. Raises SystemExit if no file of target is usable."""
        self.rate, self.out_rate, self.channels = rate, out_rate, channels
        D, R = model.config.frame_dim, model.config.chunk_frames
        self.frame_dim, self.chunk_frames = D, R
        paths, reasons = audio_paths(target), {}

        def warn(path, reason):
            reasons[path] = reason
            print(f"warning: skipping {path}: {reason}")

        model_rate = data.cached_tracks(paths, self.rate, cache_dir, warn, what="decoding the target")
        shortest = (R + 4) * D  # a grain with its crossfades, and a frame to spare either side
        usable = []
        for path, track in zip(paths, model_rate):
            if track is not None and track.n_samples < shortest:
                warn(path, f"too short: {track.n_samples / self.rate:.3f} s, a grain needs {shortest / self.rate:.3f} s")
            elif track is not None:
                usable.append((path, track))
        full_rate = data.cached_tracks([p for p, _ in usable], out_rate, cache_dir, warn, channels,
                                       what=f"decoding the target at {out_rate} Hz")
        usable = [(path, track, full) for (path, track), full in zip(usable, full_rate) if full is not None]
        if not usable:
            why = "; ".join(sorted(set(reasons.values()))) if reasons else "it holds no files"
            raise SystemExit(f"--target {target}: no usable audio ({why}). Give a WAV/FLAC/OGG/MP3/AIFF file, "
                             f"or a folder holding at least one, of at least {shortest / self.rate:.2f} s")
        gap = R + 2  # frames of silence between recordings: more than a grain and its crossfades
        self.recordings, frame = [], gap
        for path, track, full in usable:
            self.recordings.append(Recording(path, frame, track.n_samples, memmap(full.cache_path, channels)))
            frame += -(-track.n_samples // D) + 1 + gap
        tracks = [track for _, track, _ in usable]
        self.audio = self.laid_out(tracks, frame * D, cache_dir)
        self.clip_frame = self.find(clip_audio, tracks) if clip_audio is not None else None
        self.corpus = self.describe(model)

    def laid_out(self, tracks, n_samples, cache_dir):
        """The recordings' model-rate audio at their places, as one more cache file. # (n_samples,)"""
        layout = f"{self.frame_dim}|{self.chunk_frames}|" + "|".join(t.cache_path for t in tracks)
        key = hashlib.sha1(layout.encode()).hexdigest()
        path = os.path.join(cache_dir, f"corpus_{key}.f32")
        if not os.path.exists(path) or os.path.getsize(path) != 4 * n_samples:
            with atomic.written(path) as partial, open(partial, "wb") as f:
                f.truncate(4 * n_samples)  # zeros: the gaps
                for recording, track in zip(self.recordings, tracks):
                    f.seek(4 * recording.first_frame * self.frame_dim)
                    f.write(memmap(track.cache_path).tobytes())
        return memmap(path)

    def find(self, clip_audio, tracks):
        """The corpus frame where the input's own recording begins, if the corpus holds it, else None."""
        for recording, track in zip(self.recordings, tracks):
            if recording.n_samples == len(clip_audio) and np.array_equal(memmap(track.cache_path), clip_audio):
                return recording.first_frame
        return None

    @torch.no_grad()
    def describe(self, model):
        """The Corpus, block by block: every frame's band levels and every grain's pitch classes
        (PointerHead.describe's), and with estimate every frame's mel spectrum and the per-key
        spectra fitted through stage 1's transcription (Cascade.describe's), the recordings at unit RMS."""
        D, R, head = self.frame_dim, self.chunk_frames, model.stage1.pointer
        audio = torch.from_numpy(self.audio)
        n_frames = len(self.audio) // D - 1  # every grain of the last recording, and of the gap after it
        learned = model.config.pointer_fine > 0  # with pointer_fine the choice reads fine band levels too
        spectra = model.note_spectra if model.config.estimate else None
        if spectra is not None:  # the recordings' RMS: the gaps are not theirs
            level = max(float(np.sqrt(np.sum(self.audio.astype(np.float64) ** 2) / sum(r.n_samples for r in self.recordings))),
                        model.config.rms_floor)
            statistics, mel = None, []
        power, chroma, fine = [], [], []
        for first in tqdm(range(0, n_frames, DESCRIBE_FRAMES), desc="describing the target", unit="block", leave=False):
            last = min(first + DESCRIBE_FRAMES, n_frames)
            # frame t holds samples [(t-1)D, (t+1)D), as MDCTCodec.encode makes it: frame 0 starts before sample 0
            span = F.pad(audio[max(first - 1, 0) * D : last * D], (D * (first == 0), 0))
            frames = span.unfold(0, 2 * D, D) @ head.codec.analysis.T  # (last - first, D)
            power.append(head.band_power(frames.T))
            if learned:
                fine.append(head.band_power(frames.T, head.fine_bands))
            end = (last - 1 + R) * D  # grain t holds samples [tD, tD + RD)
            grains = audio[first * D : end]
            chroma.append(head.grains_chroma(F.pad(grains, (0, end - first * D - len(grains))).unfold(0, R * D, D)))
            if spectra is not None:  # windows centred on frames first..last-1
                block = audio[first * D : last * D][None] / level
                frame_power = spectra.power(block)[:, : last - first]
                block_statistics = spectra.statistics(frame_power, model.transcribe_recording(block)[:, : last - first])
                statistics = block_statistics if statistics is None else [a + b for a, b in zip(statistics, block_statistics)]
                mel.append(spectra.mel_db(frame_power[0]))
        power = F.pad(torch.cat(power), (0, 0, 0, R - 1))  # (P+R-1, n_bands): silence after the end, as choose() pads a clip
        allowed = torch.zeros(n_frames, dtype=torch.bool)
        for recording in self.recordings:  # a grain and both crossfades inside the recording, as PointerHead.allowed
            n = -(-recording.n_samples // D) + 1
            allowed[recording.first_frame + 1 : recording.first_frame + n - R - 1] = True
        clip_frame = None if self.clip_frame is None else torch.tensor([self.clip_frame])
        fine = F.pad(torch.cat(fine), (0, 0, 0, R - 1))[None] if learned else None
        corpus = Corpus(audio[None], power[None], torch.cat(chroma)[None], allowed[None], clip_frame, fine_power=fine)
        if spectra is None:
            return corpus
        mel = F.pad(torch.cat(mel), (0, 0, 0, R - 1), value=SILENCE_DB)[None]  # silence after the end
        return replace(corpus, mel=mel, spectra=spectra.fit(*statistics), mel_level=torch.tensor([level]))

    def locate(self, frame):
        """The recording that corpus frame `frame` lies in, and the frame within it."""
        firsts = [r.first_frame for r in self.recordings]
        recording = self.recordings[int(np.searchsorted(firsts, frame, side="right")) - 1]
        return recording, frame - recording.first_frame

    def looped(self, n_samples, ratio=None):
        """The recordings one after another, looped or cut to n_samples at the model's rate
        (ratio None), or that same stretch at the output's rate: ratio = output rate / model
        rate, every recording placed at its model-rate place times ratio.
        # (n_samples,) or (round(ratio * n_samples), channels)"""
        if ratio is None:
            out = np.zeros(n_samples, np.float32)
        else:
            out = np.zeros((int(round(ratio * n_samples)), self.channels), np.float32)
        at = 0
        while at < n_samples:
            for recording in self.recordings:
                if at >= n_samples:
                    break
                n = min(recording.n_samples, n_samples - at)
                if ratio is None:
                    start = recording.first_frame * self.frame_dim
                    out[at : at + n] = self.audio[start : start + n]
                else:
                    begin, end = int(round(ratio * at)), int(round(ratio * (at + n)))
                    piece = recording.full_audio[: end - begin]
                    out[begin : begin + len(piece)] = piece
                at += n
        return out
