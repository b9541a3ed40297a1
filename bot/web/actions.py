"""What the page's buttons, forms and drags mean in the board's grammar.

The web board has no operations of its own: every action becomes a command line of
the grammar (core/grammar.py), parsed there and run by the shared executor, which
checks the role and audits it with the web user as actor. A drag between columns is
translated to the verb a person would type; where no verb makes that move, the
grammar's own refusal is what the page shows.
"""

from __future__ import annotations

from collections.abc import Mapping

from lanewarden.core.errors import UsageError

# action -> (verb, the form fields it takes, in the grammar's flag names)
ACTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "promote": ("promote", ("id", "column")),
    "promote-batch": ("promote-batch", ("from", "to", "max", "profile")),
    "move": ("move", ("id", "column")),
    "block": ("block", ("id", "reason")),
    "unblock": ("unblock", ("id",)),
    "cancel": ("cancel", ("id", "reason")),
    "retry": ("retry", ("id",)),
    "comment": ("comment", ("id", "text")),
    "link": ("link", ("parent", "child")),
    "unlink": ("unlink", ("parent", "child")),
    "caps-set": ("caps set", ("scope", "name", "value")),
    "caps-reset": ("caps reset", ("scope", "name")),
    "pause": ("pause", ()),
    "resume": ("resume", ()),
    "priority": ("edit", ("id", "priority")),
}

# dropping a card on a column: the verb that moves it there
DROP_VERBS: dict[str, list[str]] = {
    "backlog": ["move", "--column=backlog"],
    "released": ["promote", "--column=active"],
    "active": ["promote", "--column=active"],  # a release: it starts when a slot is free
    "blocked": ["block"],
    "done": ["move", "--column=done"],
}


def command_line(action: str, form: Mapping[str, str]) -> list[str]:
    """The argv of the grammar for an action and its form fields (empty fields left out)."""
    if action == "drop":
        return drop_line(form.get("id", ""), form.get("from", ""), form.get("to", ""))
    if action in ("pause", "resume"):
        return pause_line(action, form.get("scope", "board"), form.get("name", ""))
    if action not in ACTIONS:
        raise UsageError(f"the board has no action {action!r}")
    verb, fields = ACTIONS[action]
    argv = verb.split()
    for name in fields:
        value = (form.get(name) or "").strip()
        if value:
            argv.append(f"--{name}={value}")
    return argv


def drop_line(task_id: str, source: str, target: str) -> list[str]:
    ref = f"--id={task_id.strip()}"
    if target == "ready":
        # out of the backlog is a promotion; back from anywhere else is a move
        return ["promote", ref, "--column=ready"] if source == "backlog" else ["move", ref, "--column=ready"]
    verb = DROP_VERBS.get(target)
    if verb is None:
        # no verb puts a task there (failed, waiting): the grammar says so in its own words
        return ["move", ref, f"--column={target}"]
    return [verb[0], ref, *verb[1:]]


def pause_line(verb: str, scope: str, name: str) -> list[str]:
    if scope == "board":
        return [verb, "--board"]
    if scope in ("profile", "gateway"):
        if not name.strip():
            raise UsageError(f"{verb} --{scope} needs the {scope}'s name")
        return [verb, f"--{scope}={name.strip()}"]
    raise UsageError(f"{verb} takes the board, a profile or a gateway, not {scope!r}")
