"""Start-up's long-lived objects kept out of the cyclic garbage collector's way, in a ``slimyq``
process only (the console entry point turns it on; a library user or a test's CliRunner does not).

Starting a command imports Typer, pydantic and redis-py: tens of thousands of objects that live as
long as the process. Their allocation triggers full collections that walk all of them, and the
interpreter walks them once more when it exits: a quarter of a read command's CPU (``slimyq
stats``). :func:`gc.freeze` moves the objects made so far to the permanent generation, which no
collection walks; nothing is switched off, and objects made later are collected as before. What
is garbage at a freeze is kept until exit: a few hundred objects at most, once or twice per
process (measured with a ``gc.collect()`` at each point).
"""

from __future__ import annotations

import gc

_on = False


def begin() -> None:
    """The console entry point: freeze what importing the command line made, and at each
    :func:`settled` point from now on."""
    global _on
    _on = True
    gc.freeze()


def settled() -> None:
    """A command has built what it keeps (settings, the Redis or database connection): freeze it,
    if :func:`begin` was called in this process."""
    if _on:
        gc.freeze()
