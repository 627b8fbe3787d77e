"""Errors a user can act on. The CLI turns each into one line and a non-zero exit code."""


class LiveduetError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code = 2


class ConfigError(LiveduetError):
    """A config file or option has a bad value."""


class VocabularyError(LiveduetError):
    """A vocabulary file is missing, malformed, or does not match what it is used with."""


class MidiFileError(LiveduetError):
    """A MIDI file cannot be read (corrupt, unsupported, or over a safety cap)."""


class CorpusError(LiveduetError):
    """A corpus source is missing or unknown, or yields nothing."""


class ModelLoadError(LiveduetError):
    """A model or checkpoint cannot be loaded."""


class PortNotFoundError(LiveduetError):
    """No MIDI port (or more than one) matches the name the user gave."""


class MidiBackendError(LiveduetError):
    """The MIDI backend (ALSA sequencer, JACK server) is unavailable."""


class OutputPathError(LiveduetError):
    """An output file cannot be written there: missing or read-only folder, a folder in its place."""
