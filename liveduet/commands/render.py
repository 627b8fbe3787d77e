"""`liveduet render SESSION.mid --out SESSION.wav`: hear a recording without a synth, via fluidsynth."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path

from liveduet.errors import LiveduetError, MidiFileError, OutputPathError
from liveduet.fsutil import check_output_file, install, os_error_line
from liveduet.music.midifile import read_midi

SAMPLE_RATE = 44100
# Debian's fluid-soundfont-gm installs the first; default-GM.sf2 is the alternatives link to whichever
# General MIDI soundfont is installed (e.g. timgm6mb-soundfont), so a machine without FluidR3 still works.
SOUNDFONTS = (Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"), Path("/usr/share/sounds/sf2/default-GM.sf2"))
MAX_RENDER_S = 2 * 3600  # 1.3 GB of WAV; a longer "session" is a broken file or a forgotten recorder
BYTES_PER_FRAME = 4  # 16-bit stereo
TAIL_S = 5.0  # fluidsynth lets the last notes ring out
TIMEOUT_S = 600  # fluidsynth renders far faster than real time; a stuck run should not hang the command


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render", help="render a recorded session to a WAV file with fluidsynth",
        description="Render a MIDI file (e.g. a session recorded with `liveduet run --record`) to a 16-bit "
        f"stereo WAV at {SAMPLE_RATE} Hz with fluidsynth and a General MIDI soundfont. Needs the Debian "
        "packages fluidsynth and fluid-soundfont-gm (or --soundfont).",
    )
    p.add_argument("midi", type=Path, metavar="SESSION.mid", help="the MIDI file to render")
    p.add_argument("--out", type=Path, required=True, metavar="SESSION.wav", help="the WAV file to write")
    p.add_argument("--soundfont", type=Path, metavar="SF2",
                   help=f"soundfont (default: {SOUNDFONTS[0]}, else {SOUNDFONTS[1]})")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.set_defaults(func=run)


def find_soundfont(given: Path | None) -> Path:
    """The soundfont to use; a one-line error naming the package when there is none."""
    if given is not None:
        if not given.is_file():
            raise LiveduetError(f"soundfont {given} not found")
        return given
    for path in SOUNDFONTS:
        if path.is_file():
            return path
    raise LiveduetError(
        f"no soundfont at {SOUNDFONTS[0]}: install the Debian package fluid-soundfont-gm "
        "(apt-get install fluid-soundfont-gm) or pass --soundfont FILE.sf2"
    )


def render_wav(midi: Path, out: Path, soundfont: Path | None = None, force: bool = False) -> Path:
    """Render `midi` to `out` (soundfont None: the default); the file appears complete or not at all."""
    if midi.is_dir() or not midi.exists():
        raise LiveduetError(f"{midi} not found" if not midi.exists() else f"{midi} is a folder, not a MIDI file")
    check_output_file(out, "the WAV file", force=force)
    try:
        # The capped reader first: fluidsynth renders whatever length a file claims (one broken
        # delta time: gigabytes of silence) and plays a truncated file as far as it goes.
        seconds = read_midi(midi).seconds
    except MidiFileError as err:
        raise MidiFileError(f"{midi}: {err}") from err
    if seconds > MAX_RENDER_S:
        raise MidiFileError(f"{midi} plays for {seconds / 60:.0f} min: over the render cap of "
                            f"{MAX_RENDER_S // 60} min")
    wav_bytes = int((seconds + TAIL_S) * SAMPLE_RATE * BYTES_PER_FRAME)
    free = _free_bytes(out.parent)
    if free is not None and wav_bytes > free:
        raise OutputPathError(f"cannot write {out}: the WAV needs about {wav_bytes / 1e6:.0f} MB, "
                              f"{free / 1e6:.0f} MB are free")
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise LiveduetError("fluidsynth not found: install the Debian package fluidsynth (apt-get install fluidsynth)")
    soundfont = find_soundfont(soundfont)
    # Render beside the target and rename: an interrupted run never leaves a truncated WAV at `out`.
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.wav")
    cmd = [exe, "-ni", "-q", "-T", "wav", "-F", str(tmp), "-r", str(SAMPLE_RATE), str(soundfont), str(midi)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
        if proc.returncode != 0 or not tmp.is_file() or tmp.stat().st_size <= 44:
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
            why = lines[-1].strip() if lines else f"exit status {proc.returncode}, no audio written"
            raise LiveduetError(f"fluidsynth failed on {midi}: {why}")
        install(tmp, out)  # the old file's mode, or a normal one (never fluidsynth's or mkstemp's)
    except subprocess.TimeoutExpired as err:
        raise LiveduetError(f"fluidsynth took more than {TIMEOUT_S} s on {midi}") from err
    except OSError as err:
        raise OutputPathError(f"cannot write {out}: {os_error_line(err)}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def run(args: argparse.Namespace) -> int:
    out = render_wav(args.midi, args.out, args.soundfont, force=args.force)
    print(f"rendered {args.midi} to {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0
