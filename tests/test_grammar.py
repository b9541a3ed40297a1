"""The command language: one parser for CLI argv, chat text and scheduler jobs."""

from __future__ import annotations

import pytest
from lanewarden.core import commands as c
from lanewarden.core.errors import UsageError
from lanewarden.core.grammar import REGISTRY, help_text, parse


def test_add_title_from_free_words_or_flag() -> None:
    cmd = parse("/kanban add Summarize the April logs --profile researcher")
    assert cmd == c.Add(title="Summarize the April logs", profile="researcher")
    assert parse(["add", "--title", "Report", "--column", "backlog", "--parent", "12"]) == c.Add(
        title="Report", column="backlog", parent=(12,)
    )


def test_add_parents_repeat_and_comma() -> None:
    cmd = parse("add t --parent 1 --parent #2 --parents 3,4")
    assert cmd.parent == (1, 2, 3, 4)


def test_title_given_twice_is_an_error() -> None:
    with pytest.raises(UsageError, match="both as --title and as words"):
        parse("add some words --title other")


@pytest.mark.parametrize("prefix", ["", "lanewarden ", "kanban ", "hermes kanban ", "/kanban "])
def test_prefixes_from_guides(prefix: str) -> None:
    assert parse(prefix + "promote-batch --from ready --to active --max 2") == c.PromoteBatch(
        max=2, from_column="ready", to_column="active"
    )


def test_synonyms_and_switches() -> None:
    assert parse("list --column ready --limit 3 --quiet") == c.ListTasks(status="ready", limit=3, quiet=True)
    assert parse("list --status=failed --json").json is True


def test_positional_or_flag_ids() -> None:
    assert parse("show #42") == parse("show --id 42") == c.Show(id=42)
    assert (
        parse("promote --id 7 --column active")
        == parse("promote 7 active")
        == c.Promote(id=7, column="active")
    )
    assert parse("promote 7") == c.Promote(id=7, column=None)
    assert parse("link 1 2") == parse("link --parent 1 --child 2") == c.Link(parent=1, child=2)


def test_caps_set_optional_name() -> None:
    assert parse("caps set board 6") == c.CapsSet(scope="board", name=None, value=6)
    assert parse("caps set gateway gpu1 2") == c.CapsSet(scope="gateway", name="gpu1", value=2)
    assert parse("caps") == c.Caps()
    assert parse("windows") == c.WindowsList()


def test_chat_quotes_are_forgiven() -> None:
    cmd = parse("windows add night --cron “0 22 * * *” --command “promote-batch --max 2”")
    assert cmd == c.WindowsAdd(name="night", cron="0 22 * * *", command="promote-batch --max 2")


def test_reason_words() -> None:
    assert parse("block 4 waiting for the vendor") == c.Block(id=4, reason="waiting for the vendor")
    assert parse("comment 4 the logs are in /srv") == c.Comment(id=4, text="the logs are in /srv")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no command"),
        ("ad t", "Did you mean `add`"),
        ("add t --profil x", "Did you mean --profile"),
        ("show", "needs --id"),
        ("show abc", "not a task id"),
        ("show -3", "not a task id"),
        ("add t --priority high", "whole number"),
        ("move 3 sideways", "must be one of backlog, ready, done"),
        ("list --limit", "needs a value"),
        ("add 'unclosed", "check your quotes"),
        ("show 1 2", "unexpected '2'"),
        ("promote-batch --from ready", "needs --max"),
        ("list --quiet=maybe", "is a switch"),
    ],
)
def test_malformed_commands(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(text)


def test_help_is_generated_from_every_verb() -> None:
    overview = help_text()
    for name in REGISTRY:
        assert name in overview
    detail = help_text("add")
    assert "--profile" in detail and "--not-before" in detail and "example:" in detail
    with pytest.raises(UsageError, match="Did you mean `add`"):
        help_text("ad")


def test_design_verbs_are_all_present() -> None:
    verbs = {name.split()[0] for name in REGISTRY}
    assert verbs >= {
        "add",
        "list",
        "show",
        "promote",
        "promote-batch",
        "move",
        "block",
        "unblock",
        "cancel",
        "retry",
        "link",
        "unlink",
        "comment",
        "caps",
        "pause",
        "resume",
        "status",
        "windows",
        "subscribe",
        "unsubscribe",
        "help",
    }
