"""Pure port-name matching: turn what a user types ("Keyboard") into a backend's full port name.

JACK names look like ``RtMidiOut Client:Keyboard``; ALSA names carry client numbers
(``Keyboard:Keyboard MIDI 1 20:0``) that change on replug. mido only matches exactly, so we resolve
the user's words here and never open a virtual port on a typo.
"""

from __future__ import annotations

import re

from liveduet.errors import PortNotFoundError

# ALSA appends " <client>:<port>" to every name; it is not part of what a user types.
_ALSA_SUFFIX = re.compile(r"\s+\d+:\d+$")


def short_names(name: str) -> set[str]:
    """The parts of a full port name a user might type on its own, case-folded.

    ``RtMidiOut Client:Keyboard`` → {"rtmidiout client", "keyboard"};
    ``Keyboard:Keyboard MIDI 1 20:0`` → {"keyboard", "keyboard midi 1"}.
    """
    base = _ALSA_SUFFIX.sub("", name)
    return {part.strip().casefold() for part in base.split(":") if part.strip()}


def match_port(query: str, names: list[str], kind: str) -> str:
    """Return the one name in `names` that `query` means; raise `PortNotFoundError` otherwise.

    Tiers, first unique hit wins: exact name; case-insensitive name; case-insensitive client or port
    part; unique case-insensitive substring. Several hits in a tier are ambiguous, never a guess.
    `kind` ("input"/"output") only words the error message.
    """
    if not query.strip():
        raise PortNotFoundError(f"empty MIDI {kind} port name; {_available(names, kind)}")
    if query in names:
        return query
    folded = query.strip().casefold()
    tiers = (
        [n for n in names if n.casefold() == folded],
        [n for n in names if folded in short_names(n)],
        [n for n in names if folded in n.casefold()],
    )
    for hits in tiers:
        unique = list(dict.fromkeys(hits))  # a backend may list one name twice
        if len(unique) == 1:
            return unique[0]
        if len(unique) > 1:
            raise PortNotFoundError(
                f"MIDI {kind} port name {query!r} is ambiguous: it matches {_quoted(unique)}; give more of the name"
            )
    raise PortNotFoundError(f"no MIDI {kind} port matches {query!r}; {_available(names, kind)}")


def _quoted(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _available(names: list[str], kind: str) -> str:
    if not names:
        return f"there are no MIDI {kind} ports (is the device connected and the backend right?)"
    return f"available {kind}s: {_quoted(names)}"
