"""
The two-stage cascade transformer with fixed RMS scaling, and the MDCT codec
that turns audio into the frames it works on.

    x_in, x_tgt (B, D, T)
      -> divide both by their shared reference level (unit scale from here on)
      -> stage 1: [x_in | x_tgt]         -> transformer -> head, + 1.0 * mean residual -> fixed RMS -> out1
      -> stage 2: [x_in | out1 | x_tgt]  -> transformer -> head, + final_residual * mean -> fixed RMS -> out2
      -> multiply by the reference level again

Fixed RMS scaling has no parameter: each stage's output is scaled to
sqrt((rms(x_in)^2 + rms(x_tgt)^2) / 2). The learnable scalars it replaces received
gradients orders of magnitude larger than the rest of the network (docs/nan.md).
Dividing by the shared reference level on entry makes the network level-equivariant,
model(c*x, c*y) == c*model(x, y), and keeps every stage's scale factor near 1 whatever
the loudness of the clips.

Every chunk of a stage's output plays a grain, a stretch of the corpus's own audio
(the target's by default), taken from at least min_shift_frames away in time: the output is
made of the target's sounds, and can neither invent noise nor play a moment onto itself. In
generation a Corpus, a whole song or folder, stands in for the clip's target. Stage 1's head
is a pointer (PointerHead): a grain chosen to match what the input plays then in band levels
and pitch classes, favoured where it carries on the previous grain; its blocks also
transcribe the input (which piano keys sound). Stage 2's head (EstimateHead, with estimate)
plays the grain nearest an estimate of the truth, the input's notes played by the target's
instrument: the corpus's spectrum at every key (NoteSpectra, fitted through stage 1's
transcription of the corpus) summed over the keys stage 1 hears in the input, refined by
stage 2's blocks. The original design's head, a Linear(C -> D) per frame
after a LayerNorm of every frame, is kept as head="linear" with frame_norm=True; it
makes noise (docs/LOG.md).

Blocks are our own pre-norm blocks: pre-norm keeps gradients well scaled through
depth without warm-up tricks. Attention is plain matrix products up to
MATRIX_ATTENTION_FRAMES (faster than the fused kernel on a CPU at the default clip
length, docs/speed.md), and F.scaled_dot_product_attention beyond, whose fused kernels
never keep a (T, T) attention matrix for the backward pass, so memory grows linearly
with clip length. They compute the same function as
nn.TransformerEncoderLayer(norm_first=True, activation="gelu") and use its parameter
layout, so weights carry across one to one. One difference, in training only: dropout
(0 by default) acts on the residual branches but not on the attention weights, which
would force the (T, T) matrix at every length. In eval mode the two are the same function.
"""

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class CascadeConfig:
    frame_dim: int = 128  # D: MDCT bins per frame, which is also the codec's hop in samples
    sample_rate: int = 16000  # of the audio the frames encode: the pointer reads pitch classes from it
    n_layer: int = 2  # transformer layers in each stage
    n_head: int = 4  # attention heads; must divide 2*D (stage 1) and 3*D (stage 2)
    dropout: float = 0.0  # on residual branches; 0.1 made no better blends, only slower steps (docs/LOG.md)
    final_residual: float = 0.1  # stage-2 residual weight
    # How a stage turns features into frames. "pointer": grains of the corpus's own
    # audio (PointerHead). "linear": a Linear(C -> D) per frame, the original design's.
    head: str = "pointer"
    chunk_frames: int = 16  # pointer: frames per grain; 16 = 128 ms at 16 kHz, long enough to carry a note
    min_shift_frames: int = 63  # pointer: grains come from at least this far in time; 63 = 0.5 s at 16 kHz
    pointer_bands: int = 16  # pointer: log-spaced bands that describe a grain to the choice
    pointer_sharpness: float = 10.0  # pointer: choice logits per (10 dB)^2 of mean squared band-level distance
    pointer_candidates: int = 8  # pointer: training mixes this many best grains per chunk (eval plays the best)
    pointer_straight_through: bool = False  # pointer: training plays the best grain too, with the mix's gradient
    # pointer: which sources form a stage's corpus. "target": the target alone, so every sound
    # is the target's (stage 1's output is left out: its 1.0x residual is half the input);
    # "all": every source the stage sees, the input's own audio from elsewhere in time too.
    pointer_corpus: str = "target"
    pointer_chroma: float = 1.0  # pointer: weight of the pitch-class distance beside the band levels' in the choice
    pointer_continuity: float = 2.0  # pointer: distance a chunk forgives the grain that continues the previous chunk's
    pointer_seek: bool = False  # pointer: the transformer may also shift the band levels a chunk seeks
    # pointer: weight of a grain's fine band levels in the choice, beside its band levels' (0: off).
    # A chunk seeks the input's fine levels moved by what the transformer predicts, which the
    # truth term of the objective trains toward the ground truth's; the prediction starts at 0.
    pointer_fine: float = 0.0
    pointer_fine_bands: int = 32  # pointer: log-spaced bands of the fine description
    # LayerNorm every frame on entry and before the head (the original design): it
    # erases each frame's loudness, so the head cannot see the music's envelope.
    frame_norm: bool = False
    # Stage 1 transcribes the input: which of the 88 piano keys sound in each frame, read by its
    # blocks from the input's harmonic spectrum (HarmonicSpectrum), which they see beside the frames.
    notes: bool = True
    note_fft: int = 4096  # samples per window of the harmonic spectrum: 256 ms at 16 kHz, 3.9 Hz apart
    # Stage 2 plays toward an estimate of the truth (EstimateHead): the target's spectrum at every
    # piano key, fitted on the corpus through stage 1's transcription of it, summed over the keys
    # stage 1 hears in the input, then refined by stage 2's blocks. Needs notes and the pointer
    # head. Off by default: nearer the ground truth than stage 1's kind of head, but with poorer
    # chroma, and on recorded music its output is noise-like (docs/LOG.md). False: stage 2 chooses
    # as stage 1 does, by band levels and pitch classes.
    estimate: bool = False
    # Any RMS below this counts as this, in forward and backward, so silence
    # stays finite. 1e-6 is -120 dBFS: below 24-bit dither, i.e. silence.
    rms_floor: float = 1e-6

    def __post_init__(self):
        for name in ("frame_dim", "n_layer", "n_head"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer")
        if (2 * self.frame_dim) % self.n_head or (3 * self.frame_dim) % self.n_head:
            raise ValueError(
                f"n_head={self.n_head} must divide both stage widths 2*frame_dim={2 * self.frame_dim} "
                f"and 3*frame_dim={3 * self.frame_dim}; pick a divisor of {math.gcd(2 * self.frame_dim, 3 * self.frame_dim)}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if self.head not in ("pointer", "linear"):
            raise ValueError(f"head={self.head!r} must be 'pointer' or 'linear'")
        if self.estimate and not (self.notes and self.head == "pointer"):
            raise ValueError(f"estimate=True needs notes=True and head='pointer' (notes={self.notes}, head={self.head!r}): "
                             f"the estimate sounds stage 1's notes and is played as grains; set estimate=False")
        if self.pointer_corpus not in ("target", "all"):
            raise ValueError(f"pointer_corpus={self.pointer_corpus!r} must be 'target' or 'all'")
        if self.sample_rate < 1 or self.pointer_chroma < 0 or self.pointer_continuity < 0:
            raise ValueError(f"sample_rate={self.sample_rate} must be positive, pointer_chroma={self.pointer_chroma} "
                             f"and pointer_continuity={self.pointer_continuity} >= 0")
        if self.chunk_frames < 2 or self.min_shift_frames < 0 or self.pointer_bands < 1 or self.pointer_candidates < 1:
            raise ValueError(f"chunk_frames={self.chunk_frames} must be >= 2, min_shift_frames={self.min_shift_frames} "
                             f">= 0, pointer_bands={self.pointer_bands} and pointer_candidates={self.pointer_candidates} >= 1")
        if not self.pointer_sharpness > 0.0:
            raise ValueError(f"pointer_sharpness={self.pointer_sharpness} must be > 0")
        if not self.rms_floor > 0.0:
            raise ValueError(f"rms_floor={self.rms_floor} must be > 0")


# -----------------------------------------------------------------------------
# fixed RMS scaling


def rms(x, floor):
    """Per-sample RMS over (D, T) in float32, never below `floor`. # (B, D, T) -> (B, 1, 1)"""
    # clamp before the sqrt: its gradient is finite everywhere, and zero below the floor
    return x.float().pow(2).mean(dim=(1, 2), keepdim=True).clamp_min(floor**2).sqrt()


def combined_rms(x_in, x_tgt, floor):
    """The level both stages aim for: sqrt((rms_in^2 + rms_tgt^2) / 2). # (B, 1, 1)"""
    return ((rms(x_in, floor).pow(2) + rms(x_tgt, floor).pow(2)) / 2).sqrt()


def scale_to_rms(x, target_rms, floor):
    """Fixed RMS scaling: x rescaled to target_rms, no parameter. Returns (out, scale factor (B,))."""
    scale = target_rms / rms(x, floor)
    return x.float() * scale, scale.view(-1)


# -----------------------------------------------------------------------------
# codec


class MDCTCodec(nn.Module):
    """Critically sampled MDCT with a sine window and hop D: audio (B, N) <-> frames (B, D, T).

    The basis is orthonormal (Princen-Bradley), so decode(encode(x)) == x and
    the frames hold exactly the audio's energy. With T = ceil(N / D) + 1 frames,
    rms(frames) = rms(audio) * sqrt(N / (D * T)): within D / (2N) of the audio's
    RMS (0.4% for one second at 16 kHz), so 'RMS' means loudness everywhere.
    """

    def __init__(self, frame_dim=128):
        super().__init__()
        D = frame_dim
        n = torch.arange(2 * D, dtype=torch.float64)
        k = torch.arange(D, dtype=torch.float64)
        window = torch.sin(math.pi * (n + 0.5) / (2 * D))
        basis = math.sqrt(2.0 / D) * torch.cos(math.pi / D * (n[None, :] + 0.5 + D / 2) * (k[:, None] + 0.5))
        self.D = D
        self.register_buffer("analysis", (basis * window).float(), persistent=False)  # (D, 2D)

    def encode(self, audio):  # (B, N) -> (B, D, T)
        D, N = self.D, audio.shape[-1]
        padded = F.pad(audio.float(), (D, D + (-N) % D))
        frames = padded.unfold(-1, 2 * D, D)  # (B, T, 2D)
        return (frames @ self.analysis.T).transpose(1, 2)

    def decode(self, frames, length=None):  # (B, D, T) -> (B, length), length (T - 1) * D by default
        D = self.D
        pieces = frames.float().transpose(1, 2) @ self.analysis  # (B, T, 2D)
        # overlap-add at 50%: hop j is the second half of frame j plus the first half of frame j+1
        audio = (pieces[:, :-1, D:] + pieces[:, 1:, :D]).flatten(1)  # (B, (T-1)*D)
        return audio if length is None else F.pad(audio, (0, max(length - audio.shape[1], 0)))[:, :length]


# -----------------------------------------------------------------------------
# what stage 1 hears: the harmonic spectrum

LOWEST_KEY, N_KEYS = 21, 88  # the piano's keys, A0 (MIDI 21) to C8 (108): what stage 1 transcribes
# Harmonics stacked per key, as Spotify's basic-pitch stacks them: a note shows as energy at one
# key across its harmonics whatever its instrument; the sub-octave tells it from its own octave above.
HARMONICS = (0.5, 1, 2, 3, 4, 5)
SPECTRUM_FLOOR = 1e-6  # power (of a unit-RMS clip) below this counts as this: -60 dB


def key_frequency(key):
    """The equal-tempered frequency of a MIDI key, A4 = 440 Hz."""
    return 440.0 * 2.0 ** ((np.asarray(key, dtype=np.float64) - 69) / 12)


def harmonic_filterbank(sample_rate, n_fft):
    """Row (h, k) averages the FFT bins within a semitone of harmonic h of key k, triangularly on
    a log-frequency axis; where bins lie further apart than that (the bass), it interpolates
    between the two nearest. Rows above Nyquist are zero. # (len(HARMONICS) * N_KEYS, n_fft//2 + 1)"""
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    centres = np.outer(HARMONICS, key_frequency(np.arange(LOWEST_KEY, LOWEST_KEY + N_KEYS))).reshape(-1, 1)
    semitones = 12 * np.log2(np.maximum(bins, 1e-3) / centres)
    weights = np.maximum(np.maximum(0.0, 1 - np.abs(semitones)), np.maximum(0.0, 1 - np.abs(bins - centres) / bins[1]))
    weights[centres[:, 0] >= sample_rate / 2] = 0.0
    total = weights.sum(axis=1, keepdims=True)
    return torch.from_numpy(weights / np.where(total > 0, total, 1.0)).float()


class HarmonicSpectrum(nn.Module):
    """Frames -> each frame's log power at every harmonic of every piano key, from a long window
    centred on the frame: the MDCT's bins are 62.5 Hz apart, a semitone in the bass is 4 Hz.
    # (B, D, T) -> (B, T, len(HARMONICS) * N_KEYS)"""

    def __init__(self, frame_dim, sample_rate, n_fft):
        super().__init__()
        self.codec, self.n_fft = MDCTCodec(frame_dim), n_fft
        window = torch.hann_window(n_fft)
        self.register_buffer("window", window / window.sum(), persistent=False)  # a sine of amplitude a peaks at a^2/4
        self.register_buffer("filterbank", harmonic_filterbank(sample_rate, n_fft), persistent=False)

    def forward(self, frames):
        _, D, T = frames.shape
        # Windows every second frame, the power between them interpolated: a 256 ms window moves
        # little in 8 ms, and the STFT was a fifth of a transcription step (docs/LOG.md)
        windows = T // 2 + 1  # centred on samples 0, 2D, ..., at or past frame T-1's centre
        audio = F.pad(self.codec.decode(frames.float()), (0, (windows - 1) * 2 * D - (T - 1) * D))
        spectrum = torch.stft(audio, self.n_fft, 2 * D, window=self.window, center=True, pad_mode="constant",
                              return_complex=True).abs().pow(2)  # (B, n_fft//2 + 1, windows)
        power = F.interpolate(self.filterbank @ spectrum, size=2 * windows - 1, mode="linear", align_corners=True)
        # log10 power scaled so that the floor is -1 and unit power +1: the range of the frames' values
        return torch.log10(power[..., :T].transpose(1, 2) + SPECTRUM_FLOOR) / 3 + 1


class KeyFeatures(nn.Module):
    """The harmonic spectrum -> d_model features of a frame: one small convolution over
    neighbouring keys, the same at every key (a note's harmonics look alike at any pitch), then
    a linear map of all keys' channels. # (B, T, len(HARMONICS) * N_KEYS) -> (B, T, d_model)"""

    def __init__(self, d_model, channels=8, width=5):
        super().__init__()
        self.conv = nn.Conv1d(len(HARMONICS), channels, width, padding=width // 2)
        self.proj = nn.Linear(channels * N_KEYS, d_model)
        # at the frames' scale: unnormalised, the frames' MDCT coefficients (RMS ~1 each) drown it in
        # what the blocks' LayerNorms see
        self.norm = nn.LayerNorm(d_model)

    def forward(self, spectrum):
        B, T, _ = spectrum.shape
        x = F.gelu(self.conv(spectrum.reshape(B * T, len(HARMONICS), N_KEYS)))  # (B*T, channels, N_KEYS)
        return self.norm(self.proj(x.reshape(B, T, -1)))


# -----------------------------------------------------------------------------
# what stage 2 plays toward: an estimate of the truth

MEL_FFT, N_MELS = 512, 64  # the estimate's spectrum: the grid the ground truth's log-spectral distance is measured on
MEL_FLOOR = 1e-8  # mel power of a unit-RMS recording below this counts as this: -80 dB
SILENCE_DB = 10 * math.log10(MEL_FLOOR)  # what a silent frame's mel bins read, after a recording's end too
# Mel bins further below a clip's loudest bin than this count as that far below, in the choice
# and the loss alike: where the ground truth's log-spectral distance floors them, silence is no distance
DB_BELOW_PEAK = 80.0
SPECTRA_ITERATIONS = 100  # multiplicative updates of the per-key spectra's non-negative least squares
# A key that sounds in fewer of the corpus's frames takes the nearest well-heard key's spectrum,
# transposed: a 20 s material lacks 28% of its input's keys (docs/LOG.md)
WELL_HEARD_FRAMES = 10
NOTE_WINDOW_FRAMES = 250  # stage 1 transcribes a corpus in windows of this many frames: 2 s at 16 kHz, the trained clip


def mel_filterbank(sample_rate, n_fft, n_mels):
    """librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels): Slaney's mel scale, each
    filter of unit area, rebuilt with numpy as pitch_class_filter is (a test checks they agree).
    # (n_mels, n_fft//2 + 1)"""
    log_step = math.log(6.4) / 27  # the scale is linear below 1 kHz (15 mels) and logarithmic above

    def mel(hz):
        return np.where(hz < 1000, hz * 3 / 200, 15 + np.log(np.maximum(hz, 1000) / 1000) / log_step)

    def hz(m):
        return np.where(m < 15, m * 200 / 3, 1000 * np.exp((m - 15) * log_step))

    edges = hz(np.linspace(0.0, mel(np.float64(sample_rate / 2)), n_mels + 2))
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    rising = (bins[None] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    falling = (edges[2:, None] - bins[None]) / np.diff(edges)[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling)) * (2 / (edges[2:] - edges[:-2]))[:, None]
    return torch.from_numpy(weights).float()


class NoteSpectra(nn.Module):
    """An instrument as one power spectrum per piano key, fitted on a recording of it through the
    notes it plays, and the estimate of the truth they give: the spectra of the keys the input
    sounds, summed. The fit is non-negative least squares on the recording's power spectra
    (multiplicative updates), with one more spectrum always on: what sounds whatever the notes.
    A key the recording plays too little borrows a neighbour's spectrum (transposed)."""

    def __init__(self, frame_dim, sample_rate):
        super().__init__()
        self.hop = frame_dim
        self.register_buffer("window", torch.hann_window(MEL_FFT), persistent=False)
        self.register_buffer("mel", mel_filterbank(sample_rate, MEL_FFT, N_MELS), persistent=False)

    def power(self, audio):
        """Power spectra of windows centred on every hop, where the model's frames are.
        # (B, N) -> (B, N // D + 1, MEL_FFT//2 + 1)"""
        spectrum = torch.stft(audio.float(), MEL_FFT, self.hop, window=self.window, center=True, pad_mode="constant",
                              return_complex=True)
        return spectrum.abs().pow(2).transpose(1, 2)

    def mel_db(self, power):
        """# (..., MEL_FFT//2 + 1) -> (..., N_MELS) mel power in dB"""
        return 10 * torch.log10(power @ self.mel.T + MEL_FLOOR)

    @staticmethod
    def statistics(power, sounding):
        """What fit() needs of a recording, summed over its stretches: its spectra times its notes (and
        the always-on spectrum's constant 1), its notes times themselves, and the frames each key
        sounds in. # (B, T, F), (B, T, N_KEYS) 0/1 -> (B, F, N_KEYS+1), (B, N_KEYS+1, N_KEYS+1), (B, N_KEYS)"""
        H = F.pad(sounding.double(), (0, 1), value=1.0)  # (B, T, N_KEYS+1)
        return power.double().transpose(1, 2) @ H, H.transpose(1, 2) @ H, sounding.double().sum(dim=1)

    def fit(self, cross, gram, heard):
        """Every key's power spectrum and the always-on one, from statistics(). # -> (B, F, N_KEYS+1)"""
        spectra = torch.ones_like(cross) * cross.mean(dim=(1, 2), keepdim=True).clamp_min(1e-30)
        for _ in range(SPECTRA_ITERATIONS):
            spectra = spectra * cross / (spectra @ gram + 1e-30)
        return torch.cat([self.borrowed(spectra[..., :N_KEYS], heard), spectra[..., N_KEYS:]], dim=2).float()

    @staticmethod
    def borrowed(spectra, heard):
        """Each key's spectrum; a key heard in fewer than WELL_HEARD_FRAMES frames takes the nearest
        well-heard key's, every frequency moved by the interval between the two (its bins linearly
        interpolated, its power spread over the wider bins). # (B, F, N_KEYS), (B, N_KEYS) -> like spectra"""
        B, n_bins, K = spectra.shape
        keys = torch.arange(K, device=spectra.device)
        well = heard >= WELL_HEARD_FRAMES  # (B, K)
        apart = (keys[:, None] - keys[None, :]).abs().double()  # (key, source)
        source = apart[None].masked_fill(~well[:, None, :], math.inf).argmin(dim=2)  # (B, K)
        ratio = 2.0 ** ((keys[None] - source).double() / 12)  # (B, K)
        position = torch.arange(n_bins, device=spectra.device)[None, None] / ratio[..., None]  # (B, K, F): bin read
        low = position.floor().long().clamp(max=n_bins - 1)
        high, fraction = (low + 1).clamp(max=n_bins - 1), position - low
        own = spectra.gather(2, source[:, None, :].expand(B, n_bins, K)).transpose(1, 2)  # (B, K, F): the source's
        moved = (own.gather(2, low) * (1 - fraction) + own.gather(2, high) * fraction) / ratio[..., None]
        moved = moved.masked_fill(position > n_bins - 1, 0.0).transpose(1, 2)  # (B, F, K)
        return torch.where((well | ~well.any(dim=1, keepdim=True))[:, None, :], spectra, moved)

    @staticmethod
    def floored(mel_db, peak):
        """mel_db no lower than DB_BELOW_PEAK below peak, each clip's own. # (B, ..., N_MELS), (B,) -> like mel_db"""
        return torch.maximum(mel_db, (peak - DB_BELOW_PEAK).view(-1, *[1] * (mel_db.dim() - 1)))

    def fixed_fit(self, spectra, sounding):
        """The mel spectrum in dB of the keys that sound, played with the spectra. # (B, F, N_KEYS+1),
        (B, T, N_KEYS) 0/1 -> (B, T, N_MELS)"""
        return self.mel_db(F.pad(sounding.float(), (0, 1), value=1.0) @ spectra.transpose(1, 2))


# -----------------------------------------------------------------------------
# transformer


def sinusoidal_positions(T, C, device):
    """The classic fixed encoding of 'Attention is all you need'. # (T, C)"""
    position = torch.arange(T, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, C, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / C))
    pe = torch.zeros(T, C, device=device)
    pe[:, 0::2] = torch.sin(position * frequency)
    pe[:, 1::2] = torch.cos(position * frequency)
    return pe


# Up to this many frames, attention as plain matrix products (the (T, T) matrix kept for the
# backward pass) is faster on a CPU than the fused kernel (docs/speed.md); beyond it the fused
# kernel keeps memory linear in clip length.
MATRIX_ATTENTION_FRAMES = 512


class SelfAttention(nn.Module):
    def __init__(self, d_model, n_head):
        super().__init__()
        self.n_head = n_head
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x):  # (B, T, C)
        B, T, C = x.shape
        q, k, v = self.in_proj(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, C/H)
        if T <= MATRIX_ATTENTION_FRAMES:
            y = ((q @ k.transpose(2, 3)) * (C // self.n_head) ** -0.5).softmax(dim=-1) @ v
        else:
            y = F.scaled_dot_product_attention(q, k, v)  # no dropout on attention weights: see the docstring
        return self.out_proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, d_model, n_head, dropout):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_head)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, 4 * d_model)
        self.linear2 = nn.Linear(4 * d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):  # (B, T, C)
        x = x + self.dropout(self.attn(self.norm1(x)))
        return x + self.dropout(self.linear2(self.dropout(F.gelu(self.linear1(self.norm2(x))))))


def band_index(frame_dim, n_bands):
    """Which of n_bands log-spaced bands each MDCT bin falls in. # (D,) long"""
    edges = torch.logspace(0, math.log10(frame_dim), n_bands + 1)
    return (torch.bucketize(torch.arange(frame_dim) + 1.0, edges, right=True) - 1).clamp(0, n_bands - 1)


def pitch_class_filter(sample_rate, n_fft):
    """librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, tuning=0.0), rebuilt with numpy
    (a test checks they agree): librosa's first call costs seconds of imports in every
    process that builds a model. Each FFT bin is a Gaussian bump around its pitch class,
    columns at unit norm, weighted towards the octaves around C5. # (12, n_fft//2 + 1)"""
    frequencies = np.arange(1, n_fft) * sample_rate / n_fft
    pitch = 12 * np.log2(frequencies / (440.0 / 16))  # semitones above A at 27.5 Hz / 2
    pitch = np.concatenate([[pitch[0] - 18], pitch])  # the 0 Hz bin, put 1.5 octaves below the first
    width = np.concatenate([np.maximum(np.diff(pitch), 1.0), [1.0]])
    distance = np.remainder(pitch[None] - np.arange(12)[:, None] + 126, 12) - 6  # (12, n_fft), in semitones
    weights = np.exp(-0.5 * (2 * distance / width) ** 2)
    weights = weights / np.linalg.norm(weights, axis=0, keepdims=True) * np.exp(-0.5 * ((pitch / 12 - 5) / 2) ** 2)
    return torch.from_numpy(np.roll(weights, -3, axis=0)[:, : n_fft // 2 + 1]).float()  # rows from C, not A


def log_band_power(power):
    """log10 band power with a -60 dB floor: the level a grain is matched by. # like power"""
    return torch.log10(power + 1e-6)


def grain_window(position, D, R):
    """The weight of a played grain `position` samples (fractional too: a renderer at another
    rate) after its crossfade in begins, at the model's rate: a sin^2 fade in over 2D samples,
    1, then a cos^2 fade out over the 2D samples where the next grain, R*D later, fades in;
    sin^2 + cos^2 = 1 where two grains meet. # same shape as position"""
    fade_in = torch.sin(0.5 * math.pi * ((position + 0.5) / (2 * D)).clamp(0, 1)).pow(2)
    return fade_in * torch.cos(0.5 * math.pi * ((position - R * D + 0.5) / (2 * D)).clamp(0, 1)).pow(2)


@dataclass
class Corpus:
    """Audio beyond the clip for the pointer heads to take grains from instead of the clip's own
    target, one corpus per clip of the batch: a rendered score's material in training, a whole
    song or folder in generation. P grains at the model's rate, each described as PointerHead
    describes a clip's, and at the clip's level (at_unit_level) just as exactly: band levels
    carry a floor that is not scale-free."""
    audio: torch.Tensor  # (B, N) mono; grain p's samples start at p*D, a hop of crossfade either side
    power: torch.Tensor  # (B, P+R-1, n_bands) the band power of every frame
    chroma: torch.Tensor  # (B, P, 12) each grain's pitch classes, a unit vector
    allowed: torch.Tensor  # (B, P) bool: the grain and both its crossfades lie inside one recording
    # (B,) long: the frame of the corpus where the clip's own recording is at the clip's
    # frame 0 (the copy guard keeps min_shift frames from it), or None: the clip is not in it
    clip_frame: torch.Tensor | None = None
    unit_factor: torch.Tensor | None = None  # (B,): what Cascade multiplied each clip by; set by at_unit_level, with
    levels: torch.Tensor | None = None  # (B, P+R-1, n_bands) log10 band power at that factor, and
    level_norms: torch.Tensor | None = None  # (B, P) squared levels summed over each grain's R frames
    fine_power: torch.Tensor | None = None  # (B, P+R-1, fine_bands) with pointer_fine: the fine bands' power
    # with estimate (Cascade.describe): every frame's mel spectrum in dB (B, P+R-1, N_MELS) and the
    # instrument's spectrum at every key and the always-on one (B, MEL_FFT//2 + 1, N_KEYS+1), of the
    # recording at unit RMS, and the RMS it was divided by (B,)
    mel: torch.Tensor | None = None
    spectra: torch.Tensor | None = None
    mel_level: torch.Tensor | None = None

    def playable(self, own, min_shift):
        """Which grains each chunk may play: the allowed ones, and with a clip_frame (the copy guard)
        only those at least min_shift frames from the chunk's own moment in the clip's recording,
        unless none is. own: (n_chunks,) each chunk's first frame in the clip. # (B, n_chunks, P) bool"""
        allowed = self.allowed[:, None].expand(-1, len(own), -1)
        if self.clip_frame is None:
            return allowed
        moment = (self.clip_frame[:, None] + own)[..., None]  # (B, n_chunks, 1)
        far = (torch.arange(allowed.shape[2], device=own.device) - moment).abs() >= min_shift
        return torch.where((allowed & far).any(dim=2, keepdim=True), allowed & far, allowed)

    def at_unit_level(self, unit_factor, chunk_frames, fine_scale=0.0):
        """This corpus as each clip sees it after Cascade's level normalisation; fine_scale: what
        PointerHead.describe_frames scales the fine levels by."""
        levels = log_band_power(self.power * unit_factor.view(-1, 1, 1).pow(2))
        if self.fine_power is not None:
            levels = torch.cat([levels, fine_scale * log_band_power(self.fine_power * unit_factor.view(-1, 1, 1).pow(2))], 2)
        squared = F.pad(levels.pow(2).sum(dim=2).cumsum(1), (1, 0))
        norms = squared[:, chunk_frames:] - squared[:, :-chunk_frames]  # (B, P)
        return replace(self, unit_factor=unit_factor, levels=levels, level_norms=norms)


def fine_scale(config):
    """The factor on the fine levels in a grain's description, so that the mean squared distance
    over both parts is the band levels' plus pointer_fine times the fine levels'."""
    return math.sqrt(config.pointer_fine * config.pointer_bands / config.pointer_fine_bands)


class GrainPlayer(nn.Module):
    """Plays grains: R frames' worth of audio each, taken from a source of the clip or from a
    corpus, weighted, and joined by crossfades (grain_window)."""

    def __init__(self, frame_dim, chunk_frames):
        super().__init__()
        D, R = frame_dim, chunk_frames
        self.chunk_frames, self.codec = R, MDCTCodec(D)
        self.register_buffer("window", grain_window(torch.arange((R + 2) * D, dtype=torch.float64), D, R).float(), persistent=False)

    def forward(self, weights, grains, sources, corpus=None):
        """The weighted chosen grains as audio, each chunk joined to the next by a crossfade,
        encoded back to frames. Copying MDCT frames instead would leave each boundary's
        time-domain aliasing uncancelled: a click at every join. # (B, D, T)"""
        B, n_chunks, k = grains.shape
        S, (D, T), R, fade = len(sources), sources[0].shape[1:], self.chunk_frames, self.codec.D
        size = R * D + 2 * fade  # a grain's samples plus a crossfade on either side
        audio = self.codec.decode(torch.stack(sources, dim=1).float().flatten(0, 1)).view(B, S, -1)  # (B, S, (T-1)*D)
        audio = F.pad(audio, (fade, T * D + size - audio.shape[-1])).flatten(1)  # (B, S*L): grain t starts at t*D
        length = audio.shape[1] // S
        clip_grains = grains.clamp(max=S * T - 1)
        first = (clip_grains // T) * length + (clip_grains % T) * D  # (B, n_chunks, k): index of each grain's first sample
        index = first[..., None] + torch.arange(size, device=grains.device)  # (B, n_chunks, k, size)
        taken = audio.gather(1, index.flatten(1)).view(B, n_chunks, k, size)
        if corpus is not None:
            first = (grains - S * T) * D - fade  # in the corpus's audio
            index = (first[..., None] + torch.arange(size, device=grains.device)).clamp(0, corpus.audio.shape[1] - 1)
            from_corpus = corpus.audio.gather(1, index.flatten(1)).view(B, n_chunks, k, size).float()
            from_corpus = from_corpus * corpus.unit_factor.view(B, 1, 1, 1)  # to the clip's unit level
            taken = torch.where((grains < S * T)[..., None], taken, from_corpus)
        y = (weights[..., None, :] @ taken).squeeze(2) * self.window  # (B, n_chunks, size)
        out = F.fold(y.transpose(1, 2), output_size=(1, n_chunks * R * D + 2 * fade), kernel_size=(1, size), stride=(1, R * D))
        return self.codec.encode(out.view(B, -1)[:, fade : fade + (T - 1) * D])[:, :, :T]


class PointerHead(nn.Module):
    """Each chunk of R output frames plays a grain: R frames' worth of one source's audio,
    starting at any frame at least min_shift frames from the chunk's own start.

    A grain is described by its band levels, frame by frame, and by its pitch classes (the
    chroma of its R * D samples). A chunk looks for the grain nearest to what the input
    plays during the chunk, moved by what the transformer adds: `prefer` favours some
    grains over others, `carry` moves how much a chunk favours continuing the previous
    chunk's grain, and (pointer_seek) `seek` shifts the band levels sought. All start at
    zero, so an untrained head is a nearest-neighbour mosaic with a fixed preference for
    continuing.

    Training plays the softmax mix of the `candidates` best grains, so gradients reach the
    choice; eval plays the best grain alone. With straight_through, training plays the
    best grain too and only its gradient is the mix's: the objective then judges exactly
    what eval plays, but the gradient is a first-order guess at what a swap of a whole grain
    would do, and it trained no better (docs/LOG.md). Grains are played as audio and joined
    by crossfades."""

    def __init__(self, d_model, n_sources, config):
        super().__init__()
        D, R = config.frame_dim, config.chunk_frames
        self.n_sources, self.chunk_frames, self.min_shift = n_sources, R, config.min_shift_frames
        self.sharpness, self.candidates = config.pointer_sharpness, config.pointer_candidates
        self.straight_through = config.pointer_straight_through
        self.seeks, self.fine = config.pointer_seek, config.pointer_fine > 0  # which optional layers it has
        self.chroma_weight, self.continuity = config.pointer_chroma, config.pointer_continuity
        self.first_playable = n_sources - 1 if config.pointer_corpus == "target" else 0  # sources before it are never played
        self.codec = MDCTCodec(D)
        self.register_buffer("bands", F.one_hot(band_index(D, config.pointer_bands)).float(), persistent=False)
        # the pitch-class filterbank of quality.py's chroma metric (librosa's), over one grain's samples
        self.register_buffer("chroma_filter", pitch_class_filter(config.sample_rate, R * D), persistent=False)
        self.register_buffer("chroma_window", torch.hann_window(R * D), persistent=False)
        self.player = GrainPlayer(D, R)
        self.prefer = nn.Linear(d_model, n_sources)
        if config.pointer_seek:
            self.seek = nn.Linear(d_model, config.pointer_bands * R)
        if self.continuity:
            self.carry = nn.Linear(d_model, 1, bias=False)  # the fixed continuity is its constant
        self.n_bands, self.fine_scale = config.pointer_bands, fine_scale(config)
        if config.pointer_fine:
            self.register_buffer("fine_bands", F.one_hot(band_index(D, config.pointer_fine_bands)).float(), persistent=False)
            self.predict = nn.Linear(d_model, config.pointer_fine_bands)  # each frame's move from the input's fine levels
        for linear in (self.prefer, self.seek if self.seeks else None, self.carry if self.continuity else None,
                       self.predict if self.fine else None):
            for parameter in (linear.parameters() if linear is not None else ()):
                nn.init.zeros_(parameter)

    def forward(self, x, sources, corpus=None):  # x: (B, T, C) features; sources: each (B, D, T), sources[0] the input
        """-> the played grains as frames (B, D, T); which grains they are (B, n_chunks, k),
        numbered source * T + start among the clip's sources, S * T + p for the corpus's grain p;
        and with pointer_fine the fine levels each frame seeks (B, T, fine_bands), else None."""
        with torch.autocast(x.device.type, enabled=False):  # played audio keeps float32 precision, not bf16's -54 dB floor
            sought = self.sought_fine(x.float(), sources[0]) if self.fine else None
            weights, grains = self.pick(self.logits(x.float(), sources, corpus, sought))
            return self.player(weights, grains, sources, corpus), grains, sought

    def sought_fine(self, x, frames):
        """The fine levels each frame seeks: the input's, moved by the prediction. # (B, T, fine_bands)"""
        return self.fine_levels(frames) + self.predict(x)

    def fine_levels(self, frames):
        """log10 power of every frame in the fine bands. # (..., D, T) -> (..., T, fine_bands)"""
        return log_band_power(self.band_power(frames, self.fine_bands))

    def describe_frames(self, frames):
        """What a grain is matched by, frame by frame: the band levels, and with pointer_fine the
        fine levels scaled by fine_scale. # (..., D, T) -> (..., T, n_bands [+ fine_bands])"""
        levels = log_band_power(self.band_power(frames))
        return torch.cat([levels, self.fine_scale * self.fine_levels(frames)], -1) if self.fine else levels

    def band_power(self, frames, bands=None):
        """The power of every frame in each band (self.bands by default). # (..., D, T) -> (..., T, n_bands)"""
        return frames.float().pow(2).transpose(-1, -2) @ (self.bands if bands is None else bands)

    def choose(self, x, sources, corpus=None):
        """The grains each chunk plays and their weights (pick() of logits()). # each (B, n_chunks, k)"""
        sought = self.sought_fine(x, sources[0]) if self.fine else None
        return self.pick(self.logits(x, sources, corpus, sought))

    def logits(self, x, sources, corpus=None, sought_fine=None):
        """Every grain's logit for every chunk: minus its distance from what the input plays
        then (with pointer_fine, the fine levels sought_fine), moved by what the transformer
        adds; -inf for grains a chunk may not play. With a corpus, its grains stand in for the
        clip's target's. # (B, n_chunks, S*T [+ P])"""
        B, T, C = x.shape
        S, R = self.n_sources, self.chunk_frames
        n_chunks = -(-T // R)
        levels = self.describe_frames(F.pad(torch.stack(sources, dim=1), (0, R - 1)))  # (B, S, T+R-1, n_bands [+ fine])
        keys = levels.unfold(2, R, 1).reshape(B, S * T, -1)  # (B, S*T, width): every grain's description, frame by frame
        own = (torch.arange(n_chunks, device=x.device) * R).clamp(max=T - 1)  # each chunk's own start
        chunk_features = F.pad(x, (0, 0, 0, n_chunks * R - T)).view(B, n_chunks, R, C).mean(dim=2)  # (B, n_chunks, C)
        wanted = levels[:, 0]  # (B, T+R-1, width): the input's description
        if sought_fine is not None:  # the fine part: what the prediction seeks
            wanted = torch.cat([wanted[..., : self.n_bands], self.fine_scale * F.pad(sought_fine, (0, 0, 0, R - 1))], -1)
        queries = wanted.unfold(1, R, 1)[:, own].reshape(B, n_chunks, -1)  # (B, n_chunks, width) over each chunk
        if self.seeks:  # on the band levels only
            queries = queries + F.pad(self.seek(chunk_features), (0, queries.shape[-1] - self.seek.out_features))
        distance = (queries.pow(2).sum(-1, keepdim=True) - 2 * queries @ keys.transpose(1, 2)
                    + keys.pow(2).sum(-1)[:, None]) / (self.n_bands * R)  # (B, n_chunks, S*T): band levels' mean squared, in (10 dB)^2
        sought = None
        if self.chroma_weight:
            with torch.no_grad():  # a description to match, as the band levels are; its gradient would double a step's cost
                sought = self.grain_chroma(sources[0], own)  # (B, n_chunks, 12)
                playable = torch.cat([self.grain_chroma(s) for s in sources[self.first_playable :]], dim=1)  # (B, S'*T, 12)
            # 1 - cosine is 0 for the same pitch classes and 1 for none shared: 10 of it weigh as a 10 dB miss.
            # Grains outside the corpus are never played: their distance is left uncomputed.
            distance = distance + self.chroma_weight * 10 * F.pad(1 - sought @ playable.transpose(1, 2), (self.first_playable * T, 0))
        logits = -self.sharpness * distance + self.prefer(x).transpose(1, 2).reshape(B, 1, S * T)
        allowed = self.allowed(T, x.device)
        if corpus is not None:
            allowed = allowed & (torch.arange(S * T, device=x.device) < (S - 1) * T)  # the clip's target: the corpus's now
        logits = logits.masked_fill(~allowed, float("-inf"))
        if corpus is not None:
            logits = torch.cat([logits, self.corpus_logits(queries, sought, own, corpus)], dim=2)
        if self.continuity:
            logits = self.continued(logits, self.sharpness * (self.continuity + self.carry(chunk_features)[..., 0]), T)
        return logits

    def pick(self, logits):
        """The grains each chunk plays and their weights: in eval the best grain with weight 1;
        in training the `candidates` best, weighted by the softmax over all grains (straight
        through: 1 for the best and 0 for the rest in the forward pass, the softmax's in
        the backward pass). # each (B, n_chunks, k)"""
        if not self.training:  # the softmax's argmax, without its exponentials over every grain of a long corpus
            best = logits.argmax(dim=-1, keepdim=True)
            return torch.ones_like(best, dtype=logits.dtype), best
        soft = logits.softmax(dim=-1)
        # leaving out the softmax's small tail saves playing every grain of the clip, and the
        # normaliser still passes gradient to every logit
        weights, grains = soft.topk(min(self.candidates, logits.shape[2]), dim=-1)
        if not self.straight_through:
            return weights, grains
        best = F.one_hot(torch.zeros_like(grains[..., 0]), grains.shape[-1]).to(weights.dtype)
        return best + weights - weights.detach(), grains

    def corpus_logits(self, queries, sought, own, corpus):
        """choose()'s logits for every grain of each clip's corpus, computed as a convolution so a
        corpus may hold hours. Its grains get no learned preference: it has no features.
        # (B, n_chunks, width*R), (B, n_chunks, 12) or None -> (B, n_chunks, P), width as describe_frames'"""
        B, n_chunks, _ = queries.shape
        width = self.n_bands * self.chunk_frames  # the distance is the band levels' mean squared (see logits())
        kernels = queries.reshape(B * n_chunks, -1, self.chunk_frames)  # (B*n_chunks, width, R), the layout of the keys
        levels = corpus.levels.transpose(1, 2).reshape(1, -1, corpus.levels.shape[1]).float()  # (1, B*width, P+R-1)
        cross = F.conv1d(levels, kernels, groups=B).view(B, n_chunks, -1)  # (B, n_chunks, P): each clip's own corpus
        distance = (queries.pow(2).sum(-1, keepdim=True) - 2 * cross + corpus.level_norms[:, None]) / width
        if sought is not None:
            distance = distance + self.chroma_weight * 10 * (1 - sought @ corpus.chroma.transpose(1, 2))
        return (-self.sharpness * distance).masked_fill(~corpus.playable(own, self.min_shift), float("-inf"))

    @torch.no_grad()
    def describe(self, audio, lengths=None):
        """A Corpus of one recording per clip, in memory: every frame's band power and every
        grain's pitch classes, as choose() describes a clip's. lengths: (B,) samples of each
        recording before its zero padding (all of audio by default). # audio (B, N)"""
        B, N = audio.shape
        D, R = self.codec.D, self.chunk_frames
        lengths = torch.full((B,), N, device=audio.device) if lengths is None else lengths.to(audio.device)
        P = N // D - 1  # grains that start inside the audio, as a corpus file's description counts them
        encoded = self.codec.encode(audio)  # (B, D, N // D + 1)

        def every_frame(bands):  # (B, P+R-1, bands): silence after the end, as choose() pads a clip
            return F.pad(self.band_power(encoded, bands)[:, :P], (0, 0, 0, R - 1))

        power = every_frame(self.bands)
        padded = F.pad(audio.float(), (0, (P - 1 + R) * D - N))
        chroma = self.grains_chroma(padded.unfold(1, R * D, D))  # (B, P, 12): grain t holds samples [tD, tD + RD)
        t = torch.arange(P, device=audio.device)
        frames = -(-lengths // D) + 1  # each recording's frames, as MDCTCodec.encode makes them
        allowed = (t >= 1) & (t < (frames - R - 1)[:, None])  # a grain and both crossfades inside its recording
        fine = every_frame(self.fine_bands) if self.fine else None
        return Corpus(audio, power, chroma, allowed, fine_power=fine)

    def grain_chroma(self, frames, starts=None):
        """The pitch classes of the grains of (B, D, T) frames that start at `starts` (all by
        default). # (B, n_starts, 12)"""
        T, size = frames.shape[2], self.chunk_frames * self.codec.D
        audio = F.pad(self.codec.decode(frames.float()), (0, size + self.codec.D))  # grain t's samples start at t*D
        grains = audio.unfold(-1, size, self.codec.D)[:, :T]  # (B, T, size)
        return self.grains_chroma(grains if starts is None else grains[:, starts])

    def grains_chroma(self, grains):
        """The chroma of each grain's R * D samples, as a unit vector. # (..., R*D) -> (..., 12)"""
        power = torch.fft.rfft(grains * self.chroma_window, dim=-1).abs().pow(2)  # (..., R*D/2+1)
        return F.normalize(power @ self.chroma_filter.T, dim=-1)

    def continued(self, logits, bonus, T):
        """Chunk by chunk, the grain that carries on where the previous chunk's best grain ends
        (the next R frames of the same source) gains `bonus`: the Concatenator's prior for
        continuing, which keeps notes whole across joins. # (B, n_chunks, grains), (B, n_chunks)"""
        R, clip_grains = self.chunk_frames, self.n_sources * T
        rows = [logits[:, 0]]
        for chunk in range(1, logits.shape[1]):
            previous = rows[-1].argmax(dim=-1)  # (B,)
            after = previous + R
            # only where the grain's source goes on that far; the corpus's recordings end in grains it never allows
            goes_on = torch.where(previous < clip_grains, previous % T + R < T, after < logits.shape[2])
            added = bonus[:, chunk] * goes_on
            rows.append(logits[:, chunk].scatter_add(1, after.clamp(max=logits.shape[2] - 1)[:, None], added[:, None]))
        return torch.stack(rows, dim=1)

    def allowed(self, T, device):
        """Which grains each chunk may play: a grain must come from the corpus, fit in the clip
        with both its crossfades (a hop before it and after it: a fade into the clip's
        zero padding would dip the level at that join) and start at least min_shift
        frames from the chunk's own start; in a clip too short for that, any grain of the
        corpus that fits. # (n_chunks, S*T) bool"""
        R = self.chunk_frames
        last = max(T - R - 2, 0)  # the decoded audio holds T - 1 hops; a grain and its fade-out take R + 1
        starts = torch.arange(-(-T // R), device=device) * R
        start = torch.arange(T, device=device).repeat(self.n_sources)  # (S*T,)
        source = torch.arange(self.n_sources, device=device).repeat_interleave(T)  # (S*T,)
        fits = ((start >= min(1, last)) & (start <= last) & (source >= self.first_playable))[None]  # (1, S*T)
        allowed = fits & ((start[None] - starts[:, None]).abs() >= self.min_shift)
        return torch.where(allowed.any(dim=1, keepdim=True), allowed, fits)


class EstimateHead(nn.Module):
    """Stage 2's head: each chunk of R frames plays the corpus's grain whose mel spectrum is
    nearest the estimate of the truth over the chunk (squared dB summed over its frames, as the
    oracle measures), the estimate refined by the stage's blocks. The blocks see the fixed fit
    (NoteSpectra.fixed_fit) and stage 1's note probabilities (`seen`, added to the frames);
    `refine` moves the fit frame by frame and starts at zero, so an untrained head plays the
    fixed fit. Training teaches the refinement by regression to the truth's mel spectrum
    (objective's estimate term); the choice passes no gradient, so training plays exactly
    what eval plays."""

    def __init__(self, d_model, config):
        super().__init__()
        self.chunk_frames, self.min_shift = config.chunk_frames, config.min_shift_frames
        self.player = GrainPlayer(config.frame_dim, config.chunk_frames)
        self.seen = nn.Sequential(nn.Linear(2 * N_MELS + N_KEYS, d_model), nn.LayerNorm(d_model))
        self.refine = nn.Linear(d_model, N_MELS)
        nn.init.zeros_(self.refine.weight)
        nn.init.zeros_(self.refine.bias)

    def sees(self, fitted, input_mel, probabilities):
        """What the blocks are shown: the fixed fit and the input's own mel spectrum, in 10 dB, and
        stage 1's note probabilities. # (B, T, N_MELS) x 2, (B, T, N_KEYS) -> (B, T, C)"""
        return self.seen(torch.cat([fitted / 10, input_mel / 10, probabilities], dim=-1))

    def forward(self, x, sources, corpus, fitted):  # x: (B, T, C) features; sources: each (B, D, T)
        """-> the played grains as frames (B, D, T); which grains they are (B, n_chunks, 1), numbered
        S * T + p for the corpus's grain p as PointerHead numbers them; the refined estimate (B, T, N_MELS)"""
        refined = fitted + 10 * self.refine(x.float())
        grains = len(sources) * x.shape[1] + self.nearest(refined.detach(), corpus)[..., None]
        with torch.autocast(x.device.type, enabled=False):  # played audio keeps float32 precision
            return self.player(torch.ones(grains.shape, device=x.device), grains, sources, corpus), grains, refined

    def nearest(self, wanted, corpus):
        """Each chunk's grain of the corpus nearest `wanted`, a mel spectrum in dB, over the chunk's
        frames, both floored DB_BELOW_PEAK below the clip's wanted peak; only grains the chunk may
        play (Corpus.playable). # (B, T, N_MELS) -> (B, n_chunks) long"""
        B, T, M = wanted.shape
        R = self.chunk_frames
        n_chunks = -(-T // R)
        peak = wanted.amax(dim=(1, 2))
        wanted = NoteSpectra.floored(F.pad(wanted, (0, 0, 0, n_chunks * R - T), value=-math.inf), peak)  # silence after the end
        kernels = wanted.view(B * n_chunks, R, M).transpose(1, 2)
        described = NoteSpectra.floored(corpus.mel, peak)  # (B, P+R-1, M)
        cross = F.conv1d(described.transpose(1, 2).reshape(1, B * M, -1), kernels, groups=B).view(B, n_chunks, -1)  # (B, n_chunks, P)
        squared = F.pad(described.pow(2).sum(dim=2).cumsum(dim=1), (1, 0))
        norms = squared[:, R:] - squared[:, :-R]  # (B, P): each grain's squared frames
        distance = kernels.pow(2).sum(dim=(1, 2)).view(B, n_chunks, 1) - 2 * cross + norms[:, None]
        own = (torch.arange(n_chunks, device=wanted.device) * R).clamp(max=T - 1)  # each chunk's own start
        return distance.masked_fill(~corpus.playable(own, self.min_shift), math.inf).argmin(dim=2)


class Stage(nn.Module):
    """concat(sources) -> positions -> blocks -> head -> + residual -> fixed RMS."""

    def __init__(self, n_sources, residual_weight, config, transcribes=False, estimates=False):
        super().__init__()
        self.residual_weight = residual_weight
        d_model = n_sources * config.frame_dim
        self.transcribes = transcribes
        self.head = "estimate" if estimates else config.head  # which head it has: estimator, pointer or proj
        if transcribes:  # the input's harmonic spectrum joins the frames; a note head reads the blocks' output
            self.spectrum = HarmonicSpectrum(config.frame_dim, config.sample_rate, config.note_fft)
            self.spectrum_in = KeyFeatures(d_model)
            self.notes = nn.Linear(d_model, N_KEYS)
        self.norm_in = nn.LayerNorm(d_model) if config.frame_norm else nn.Identity()
        self.blocks = nn.ModuleList(Block(d_model, config.n_head, config.dropout) for _ in range(config.n_layer))
        self.norm_out = nn.LayerNorm(d_model) if config.frame_norm else nn.Identity()
        # Sources enter at unit scale, so their mean has RMS ~sqrt(1/n_sources). With
        # this fixed gain on the head's output, head + residual has RMS ~1, and every stage's
        # scale factor is ~1 (no 'RMS collapse' of a weakly weighted stage).
        self.head_gain = math.sqrt(max(1.0 - residual_weight**2 / n_sources, 0.1))
        if estimates:
            self.estimator = EstimateHead(d_model, config)
        elif config.head == "pointer":
            self.pointer = PointerHead(d_model, n_sources, config)
        else:
            self.proj = nn.Linear(d_model, config.frame_dim)
            nn.init.normal_(self.proj.weight, std=self.head_gain * d_model**-0.5)  # the gain, folded into the init
            nn.init.zeros_(self.proj.bias)

    def features(self, sources, seen=None):  # sources: each (B, D, T), sources[0] the input
        """What the blocks make of the sources (and of `seen`, (B, T, C): more to see). # (B, T, C)"""
        x = torch.cat(sources, dim=1).transpose(1, 2)  # (B, T, C)
        if self.transcribes:
            x = x + self.spectrum_in(self.spectrum(sources[0]))
        if seen is not None:
            x = x + seen
        x = self.norm_in(x + sinusoidal_positions(x.shape[1], x.shape[2], x.device))
        for block in self.blocks:
            x = block(x)
        return self.norm_out(x)

    def forward(self, sources, target_rms, floor, corpus=None, shown=None):
        """sources: each (B, D, T); with an estimator, `shown`: what it shows the blocks
        (EstimateHead.sees' arguments), the fixed fit first. -> (out (B, D, T), scale factor (B,), what else the stage made, those
        it has of: "grains" the pointer or estimator played, "sought" the fine levels the pointer
        sought (PointerHead.forward), "notes" the note logits (B, T, N_KEYS), "estimate" the
        refined estimate (B, T, N_MELS))"""
        estimates = self.head == "estimate"
        x = self.features(sources, self.estimator.sees(*shown) if estimates else None)
        made = {"notes": self.notes(x)} if self.transcribes else {}
        if estimates:
            x, made["grains"], made["estimate"] = self.estimator(x, sources, corpus, shown[0])
            x = self.head_gain * x  # (B, D, T)
        elif self.head == "pointer":
            x, made["grains"], made["sought"] = self.pointer(x, sources, corpus)
            x = self.head_gain * x
        else:
            x = self.proj(x).transpose(1, 2)  # (B, D, T)
        x = x + self.residual_weight * torch.stack(sources).mean(dim=0)
        return *scale_to_rms(x, target_rms, floor), made


class Cascade(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.stage1 = Stage(2, 1.0, config, transcribes=config.notes)
        self.stage2 = Stage(3, config.final_residual, config, estimates=config.estimate)
        if config.estimate:
            self.codec, self.note_spectra = MDCTCodec(config.frame_dim), NoteSpectra(config.frame_dim, config.sample_rate)

    def forward(self, x_in, x_tgt, corpus=None, notes_only=False, roll=None):
        """x_in, x_tgt: (B, D, T) -> out2 (B, D, T) float32, and stats: out1, each stage's
        scale factor (target RMS / pre-scaling RMS, (B,)) and, for the pointer head, the
        grains each stage played (grains1, grains2), and with pointer_fine the fine levels each
        sought, at unit level (sought1, sought2). With a Corpus, the heads play its grains
        instead of the target's; x_tgt is still what the transformers see. With notes, stage 1's
        note logits (notes, (B, T, N_KEYS)). With estimate, stage 2 plays toward an estimate of
        the truth: the corpus's per-key spectra (without a corpus, the target clip's) sounding the
        keys stage 1 hears in the input, or those of `roll` ((B, T, N_KEYS) 0/1: the input's piano
        roll, its notes known); stats then hold the fixed fit and the refined estimate (fitted, estimate:
        (B, T, N_MELS), mel dB at the corpus's unit level). notes_only: (None, {"notes":
        transcribe()}), playing nothing: a transcription step, through forward since DDP syncs
        gradients there alone."""
        if notes_only:
            return None, {"notes": self.transcribe(x_in, x_tgt)}
        floor = self.config.rms_floor
        x_in, x_tgt, level = self.at_unit_level(x_in, x_tgt)
        unit = combined_rms(x_in, x_tgt, floor)  # 1, or ~0 for a silent pair
        if corpus is not None:
            if corpus.audio.shape[0] != x_in.shape[0]:
                raise ValueError(f"one corpus per clip: {corpus.audio.shape[0]} corpora for a batch of {x_in.shape[0]}")
            corpus = corpus.at_unit_level(1 / level.view(-1), self.config.chunk_frames, fine_scale(self.config))
        out1, scale1, made1 = self.stage1([x_in, x_tgt], unit, floor, corpus)
        shown = None
        if self.config.estimate:
            if corpus is None:
                corpus = self.target_corpus(x_tgt)
            probabilities = made1["notes"].float().sigmoid()
            fitted = self.note_spectra.fixed_fit(corpus.spectra, probabilities > 0.5 if roll is None else roll)
            input_mel = self.note_spectra.mel_db(self.note_spectra.power(self.codec.decode(x_in)))  # (B, T, N_MELS)
            shown = (fitted, input_mel, probabilities)
        out2, scale2, made2 = self.stage2([x_in, out1, x_tgt], unit, floor, corpus, shown)
        stats = {"out1": out1 * level, "scale1": scale1, "scale2": scale2}
        for name in ("grains", "sought"):  # sought: at the clip's unit level
            stats.update({f"{name}{stage}": made[name] for stage, made in ((1, made1), (2, made2))
                          if made.get(name) is not None})
        if "notes" in made1:
            stats["notes"] = made1["notes"]
        if shown is not None:
            stats.update(fitted=shown[0], estimate=made2["estimate"])
        return out2 * level, stats

    def target_corpus(self, x_tgt):
        """The target clip as a Corpus (describe()), at the clip's unit level, which it is at already;
        a clip too short for a grain is padded with silence that no chunk may play. # (B, D, T)"""
        audio = self.codec.decode(x_tgt)
        B, N = audio.shape
        R = self.config.chunk_frames
        lengths = torch.full((B,), max(N, 1), device=audio.device)
        corpus = self.describe(F.pad(audio, (0, max((R + 4) * self.config.frame_dim - N, 0))), lengths)
        return corpus.at_unit_level(torch.ones(B, device=audio.device), R, fine_scale(self.config))

    @torch.no_grad()
    def describe(self, audio, lengths=None, roll=None):
        """A Corpus of one recording per clip, in memory (audio (B, N); lengths (B,): samples of each
        before its zero padding, all by default): the pointer heads' description
        (PointerHead.describe) and with estimate the estimator's, every frame's mel spectrum and the
        recording's per-key spectra, fitted through stage 1's transcription of it or through
        `roll` ((B, N // D + 1, N_KEYS) 0/1: its piano roll, its notes known), both with the recording at unit
        RMS (mel_level: the RMS it was divided by)."""
        B, N = audio.shape
        lengths = torch.full((B,), N, device=audio.device) if lengths is None else lengths.to(audio.device)
        corpus = self.stage1.pointer.describe(audio, lengths)
        if not self.config.estimate:
            return corpus
        D, R, P = self.config.frame_dim, self.config.chunk_frames, corpus.allowed.shape[1]
        inside = (torch.arange(N // D + 1, device=audio.device) * D < lengths[:, None])[..., None]  # (B, N // D + 1, 1)
        level = (audio.float().pow(2).sum(dim=1) / lengths).sqrt().clamp_min(self.config.rms_floor)  # (B,)
        recording = audio.float() / level[:, None]
        power = self.note_spectra.power(recording) * inside
        if roll is None:
            roll = self.transcribe_recording(recording)
        spectra = self.note_spectra.fit(*self.note_spectra.statistics(power, roll * inside))
        mel = F.pad(self.note_spectra.mel_db(power[:, : P + R - 1]), (0, 0, 0, max(P + R - 1 - power.shape[1], 0)),
                    value=SILENCE_DB)  # (B, P+R-1, N_MELS): silence after the end, as describe pads
        return replace(corpus, mel=mel, spectra=spectra, mel_level=level)

    @torch.no_grad()
    def transcribe_recording(self, audio, batch=32):
        """Which keys stage 1 hears in each frame of a recording of any length, window by window
        (NOTE_WINDOW_FRAMES frames each, `batch` windows at a time; each window's target, which
        stage 1 also hears, is the next window). # (B, N) -> (B, N // D + 1, N_KEYS) bool"""
        B, N = audio.shape
        W, D = NOTE_WINDOW_FRAMES, self.config.frame_dim
        n_windows = N // (W * D) + 1
        windows = F.pad(audio.float(), (0, n_windows * W * D - N)).view(B, n_windows, W * D)
        contexts = windows.roll(-1, dims=1)
        sounding = [self.transcribe(self.codec.encode(w), self.codec.encode(c))[:, :W] > 0
                 for w, c in zip(windows.flatten(0, 1).split(batch), contexts.flatten(0, 1).split(batch))]
        return torch.cat(sounding).view(B, n_windows * W, N_KEYS)[:, : N // D + 1]

    def at_unit_level(self, x_in, x_tgt):
        """Both clips divided by their shared reference level, and the level. # (B, D, T) x 2, (B, 1, 1)"""
        if x_in.shape != x_tgt.shape or x_in.dim() != 3 or x_in.shape[1] != self.config.frame_dim:
            raise ValueError(
                f"x_in {tuple(x_in.shape)} and x_tgt {tuple(x_tgt.shape)} must both be (B, {self.config.frame_dim}, T)"
            )
        level = combined_rms(x_in, x_tgt, self.config.rms_floor)  # (B, 1, 1)
        return x_in / level, x_tgt / level, level

    def transcribe(self, x_in, x_tgt):
        """Stage 1's note logits alone, without playing anything: which piano keys sound in each
        frame of the input (sigmoid > 0.5: sounding). # (B, D, T) x 2 -> (B, T, N_KEYS)"""
        if not self.stage1.transcribes:
            raise ValueError("this model does not transcribe (notes=False)")
        x_in, x_tgt, _ = self.at_unit_level(x_in, x_tgt)
        return self.stage1.notes(self.stage1.features([x_in, x_tgt]))
