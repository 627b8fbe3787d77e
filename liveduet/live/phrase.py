"""The call-and-response state machine, written down in one place.

    LISTENING --note on-----------------------------> CALLING     (start a call)
    CALLING   --note on / off / pedal---------------> CALLING     (feed the tokenizer)
    CALLING   --silence >= N beats, or end gesture--> ANSWERING   (end the call, start the answer)
    CALLING   --likely end (live/entry.py)----------> ENTERING    (end the call, plan the answer)
    ENTERING  --note on-----------------------------> CALLING     (not the end after all: undo, feed)
    ENTERING  --answer's first note due-------------> ANSWERING
    ENTERING  --answer played out-------------------> LISTENING
    ANSWERING --note on, barge_in-------------------> CALLING     (stop the answer, start a call)
    ANSWERING --note on, no barge_in----------------> ANSWERING   (heard and passed thru, not a call)
    ANSWERING --answer played out-------------------> LISTENING
    any       --panic-------------------------------> LISTENING   (silence everything, forget the call)

In accompany mode there is no answer: liveduet plays along beat by beat while the player plays.

    LISTENING --note on-----------------------------> CALLING     (start a call and the accompaniment)
    CALLING   --silence, or end gesture-------------> LISTENING   (end the accompaniment)

In vary mode the call ends the same way, but the answer is a variation of the call (the phrase
VAE, live/vary.py): every END_CALL above is VARY_CALL.

`transition` is pure: the session feeds it inputs and carries out the actions it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class State(Enum):
    LISTENING = "listening"
    CALLING = "calling"
    ANSWERING = "answering"
    ENTERING = "entering"  # the answer is planned but has not sounded: the call may still go on


class Input(Enum):
    NOTE_ON = "note_on"
    NOTE_OFF = "note_off"  # also pedal changes: anything that is part of the call but starts nothing
    SILENCE = "silence"  # the call has been silent for the configured number of beats
    END_GESTURE = "end_gesture"
    ANSWER_DONE = "answer_done"
    LIKELY_END = "likely_end"  # the call seems to end: enter on the coming beat (live/entry.py)
    ANSWER_STARTED = "answer_started"  # the answer's first note is due
    PANIC = "panic"


class Action(Enum):
    START_CALL = "start_call"
    FEED = "feed"
    END_CALL = "end_call"  # also starts the answer
    VARY_CALL = "vary_call"  # END_CALL whose answer is a variation of the call (vary mode)
    STOP_ANSWER = "stop_answer"
    RESUME_CALL = "resume_call"  # undo END_CALL: the planned answer never sounded, the call goes on
    START_ACCOMPANIMENT = "start_accompaniment"
    END_ACCOMPANIMENT = "end_accompaniment"
    PANIC = "panic"


@dataclass(frozen=True)
class Step:
    state: State
    actions: tuple[Action, ...] = ()


def transition(state: State, event: Input, barge_in: bool = True, accompany: bool = False,
               vary: bool = False) -> Step:
    """The next state and what to do, for one input."""
    step = _transition(state, event, barge_in, accompany)
    if vary and Action.END_CALL in step.actions:
        return Step(step.state, tuple(Action.VARY_CALL if a is Action.END_CALL else a for a in step.actions))
    return step


def _transition(state: State, event: Input, barge_in: bool, accompany: bool) -> Step:
    if event is Input.PANIC:
        return Step(State.LISTENING, (Action.PANIC,))
    if state is State.LISTENING:
        if event is Input.NOTE_ON:
            if accompany:
                return Step(State.CALLING, (Action.START_CALL, Action.START_ACCOMPANIMENT, Action.FEED))
            return Step(State.CALLING, (Action.START_CALL, Action.FEED))
        return Step(state)
    if state is State.CALLING:
        if event in (Input.NOTE_ON, Input.NOTE_OFF):
            return Step(state, (Action.FEED,))
        if event in (Input.SILENCE, Input.END_GESTURE):
            if accompany:
                return Step(State.LISTENING, (Action.END_ACCOMPANIMENT,))
            return Step(State.ANSWERING, (Action.END_CALL,))
        if event is Input.LIKELY_END and not accompany:
            return Step(State.ENTERING, (Action.END_CALL,))
        return Step(state)
    if state is State.ENTERING:
        if event is Input.NOTE_ON:
            return Step(State.CALLING, (Action.RESUME_CALL, Action.FEED))
        if event is Input.ANSWER_STARTED:
            return Step(State.ANSWERING)
        if event is Input.ANSWER_DONE:
            return Step(State.LISTENING)
        return Step(state)
    # ANSWERING
    if event is Input.NOTE_ON and barge_in:
        return Step(State.CALLING, (Action.STOP_ANSWER, Action.START_CALL, Action.FEED))
    if event is Input.ANSWER_DONE:
        return Step(State.LISTENING)
    return Step(state)
