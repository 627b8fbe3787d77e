"""`liveduet ports`: list MIDI inputs and outputs, and check that a name resolves before a session."""

from __future__ import annotations

import argparse
import json

from liveduet.io.portnames import match_port
from liveduet.io.ports import BACKENDS, backend_label, get_backend, list_ports


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ports",
        help="list MIDI input and output ports",
        description="List the MIDI ports liveduet can open. With --input/--output, show which port "
        "a name resolves to (exact name first, then a unique case-insensitive part of it).",
    )
    p.add_argument("--backend", choices=sorted(BACKENDS), help="MIDI backend (default: $MIDO_BACKEND, else ALSA)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--input", metavar="NAME", help="resolve NAME among the inputs (error if none or ambiguous)")
    p.add_argument("--output", metavar="NAME", help="resolve NAME among the outputs (error if none or ambiguous)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    backend = get_backend(args.backend)
    inputs, outputs = list_ports(backend)
    resolved = {}
    if args.input is not None:
        resolved["input"] = match_port(args.input, inputs, "input")
    if args.output is not None:
        resolved["output"] = match_port(args.output, outputs, "output")

    if args.json:
        doc = {"backend": backend_label(backend), "inputs": inputs, "outputs": outputs}
        if resolved:
            doc["resolved"] = resolved
        print(json.dumps(doc, indent=2))
        return 0
    print(f"MIDI backend: {backend_label(backend)}")
    for title, names in (("Inputs", inputs), ("Outputs", outputs)):
        print(f"{title}:")
        for name in names or ["(none)"]:
            print(f"  {name}")
    for kind, name in resolved.items():
        print(f"{kind} resolves to: {name}")
    return 0
