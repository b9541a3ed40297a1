"""The verbs of the board's language. Field order is positional order."""

from __future__ import annotations

from dataclasses import dataclass

from lanewarden.core.errors import UsageError
from lanewarden.core.grammar import Command, Role, param, verb

ADD_COLUMNS = ("backlog", "ready")
SCOPE_CHOICES = ("board", "profile", "gateway")
TOPIC_CHOICES = ("tasks", "alerts", "digest")

_ID = "the task id (42 or #42)"


@verb(
    "add",
    "Create a task; prints its id",
    role="operator",
    examples=(
        "add Summarize the April logs --profile researcher",
        "add --title 'Report' --profile analytics-worker --column backlog --parent 12",
    ),
)
@dataclass(frozen=True, kw_only=True)
class Add(Command):
    title: str = param(free_words=True, help="what to do (or --title T)")
    body: str = param("", help="details and instructions for the agent")
    profile: str | None = param(
        None,
        aliases=("assignee",),  # Hermes' word
        help="worker profile (default: kanban.workers.profile)",
        complete="profile",
    )
    priority: int = param(0, help="higher runs first")
    column: str = param("ready", choices=ADD_COLUMNS, help="where the task starts")
    parent: tuple[int, ...] = param(
        (),
        aliases=("parents",),
        complete="task",
        help="a task that must be done first (repeat or comma-separate)",
    )
    not_before: str | None = param(None, help="do not start before this time (ISO 8601) or delay (30m, 2h)")
    max_attempts: int = param(3, help="task failures allowed before it is failed for good")


OUTPUT_CHOICES = ("json", "yaml", "table")


@verb(
    "list",
    "List tasks, highest priority first",
    role="viewer",
    examples=(
        "list --column ready --limit 3 --quiet",
        "list --status failed --json",
        "list --output yaml",
    ),
)
@dataclass(frozen=True, kw_only=True)
class ListTasks(Command):
    status: str | None = param(
        None,
        aliases=("column",),
        help="only this lane (comma-separate for several): ready lists what promote --column active "
        "accepts; released waits for a slot; waiting waits on a parent or its --not-before",
    )
    profile: str | None = param(None, aliases=("assignee",), help="only this profile", complete="profile")
    limit: int = param(50, help="at most this many tasks (0: all); a cut list says so on stderr")
    all: bool = param(False, help="include done and cancelled tasks")
    mine: bool = param(False, help="only the tasks you created")
    quiet: bool = param(False, help="print only ids, one per line")
    json: bool = param(False, help="machine-readable output (the same as --output json)")
    output: str | None = param(None, choices=OUTPUT_CHOICES, help="json, yaml or table (the default)")

    def output_format(self) -> str | None:
        if self.json and self.output not in (None, "json"):
            raise UsageError(f"--json and --output {self.output} disagree: give one of them")
        return "json" if self.json else None if self.output == "table" else self.output


@verb(
    "show",
    "A task with its dependencies, runs, history and why it waits",
    role="viewer",
    examples=("show 42", "show --id 42 --json"),
)
@dataclass(frozen=True, kw_only=True)
class Show(Command):
    id: int = param(positional=True, help=_ID, complete="task")
    json: bool = param(False, help="machine-readable output")


@verb(
    "logs",
    "What a task's runs printed (a command's stdout/stderr, an llm's answer), --follow while it runs",
    role="viewer",
    examples=("logs 42", "logs 42 --follow", "logs 42 --attempt 2 --tail 50"),
)
@dataclass(frozen=True, kw_only=True)
class Logs(Command):
    id: int = param(positional=True, help=_ID, complete="task")
    attempt: int | None = param(None, help="only this attempt (default: every run)")
    tail: int | None = param(None, help="only the last N lines of each run")
    follow: bool = param(False, help="keep printing while it runs (CLI and console; chat shows the tail)")
    json: bool = param(False, help="machine-readable output")


@verb(
    "promote",
    "Move a task forward: backlog to ready, or release it to start (active)",
    role="operator",
    examples=("promote --id 42 --column active", "promote 42"),
)
@dataclass(frozen=True, kw_only=True)
class Promote(Command):
    id: int = param(positional=True, help=_ID, complete="task")
    column: str | None = param(
        None, positional=True, choices=("ready", "active"), help="target column (default: the next one)"
    )


@verb(
    "promote-batch",
    "Promote up to --max tasks at once (what night windows run)",
    role="operator",
    examples=(
        "promote-batch --from ready --to active --max 2",
        "promote-batch --from backlog --to ready --max 10",
    ),
)
@dataclass(frozen=True, kw_only=True)
class PromoteBatch(Command):
    max: int = param(help="at most this many tasks")
    from_column: str = param("ready", flag="from", choices=("backlog", "ready"), help="take tasks from")
    to_column: str = param("active", flag="to", choices=("ready", "active"), help="move them to")
    profile: str | None = param(None, help="only this profile", complete="profile")


@verb(
    "move",
    "Move a task to another column (also back, or to done by hand)",
    role="operator",
    examples=("move 42 backlog",),
)
@dataclass(frozen=True, kw_only=True)
class Move(Command):
    id: int = param(positional=True, help=_ID, complete="task")
    column: str = param(positional=True, choices=("backlog", "ready", "done"), help="target column")


@verb(
    "block",
    "Block a task (stops it if it is running)",
    role="operator",
    examples=("block 42 waiting for the vendor",),
)
@dataclass(frozen=True, kw_only=True)
class Block(Command):
    id: int | None = param(None, positional=True, help=_ID, complete="task")
    reason: str = param("", free_words=True, help="why")
    status: str | None = param(None, help="instead of an id: every task in these statuses (comma-separated)")
    profile: str | None = param(None, help="with --status: only this profile", complete="profile")
    yes: bool = param(False, help="with --status: really do it (otherwise: say which tasks would change)")


@verb("unblock", "Unblock a task back to where it was", role="operator")
@dataclass(frozen=True, kw_only=True)
class Unblock(Command):
    id: int = param(positional=True, help=_ID, complete="task")


@verb("cancel", "Cancel a task (stops it if it is running)", role="operator")
@dataclass(frozen=True, kw_only=True)
class Cancel(Command):
    id: int | None = param(None, positional=True, help=_ID, complete="task")
    reason: str = param("", free_words=True, help="why")
    status: str | None = param(None, help="instead of an id: every task in these statuses (comma-separated)")
    profile: str | None = param(None, help="with --status: only this profile", complete="profile")
    yes: bool = param(False, help="with --status: really do it (otherwise: say which tasks would change)")


@verb("retry", "Send a failed or cancelled task back to ready with a fresh retry budget", role="operator")
@dataclass(frozen=True, kw_only=True)
class Retry(Command):
    id: int | None = param(None, positional=True, help=_ID, complete="task")
    status: str | None = param(None, help="instead of an id: every task in these statuses (comma-separated)")
    profile: str | None = param(None, help="with --status: only this profile", complete="profile")
    yes: bool = param(False, help="with --status: really do it (otherwise: say which tasks would change)")


@verb(
    "edit",
    "Change a task's title, body, priority or profile (not its title, body or profile while it runs)",
    role="operator",
    examples=("edit 7 --priority 10", 'edit 7 --title "Summarize the May logs"'),
)
@dataclass(frozen=True, kw_only=True)
class Edit(Command):
    id: int = param(positional=True, help=_ID, complete="task")
    title: str | None = param(None, help="the new title")
    body: str | None = param(None, help="the new body")
    priority: int | None = param(None, help="the new priority (higher starts first)")
    profile: str | None = param(None, help="hand it to another profile", complete="profile")


@verb(
    "purge",
    "Delete done and cancelled tasks finished longer ago than --older-than (says which without --yes)",
    role="admin",
    examples=("purge --older-than 30d", "purge --older-than 30d --yes"),
)
@dataclass(frozen=True, kw_only=True)
class Purge(Command):
    older_than: str = param(help="an age: 30d, 12h (at least 1d)")
    yes: bool = param(False, help="really delete (otherwise: say which tasks would go)")


@verb(
    "link",
    "Make a task wait for another (refuses cycles)",
    role="operator",
    examples=("link --parent 12 --child 13",),
)
@dataclass(frozen=True, kw_only=True)
class Link(Command):
    parent: int = param(positional=True, help="the task that must finish first", complete="task")
    child: int = param(positional=True, help="the task that waits", complete="task")


@verb("unlink", "Remove a dependency", role="operator")
@dataclass(frozen=True, kw_only=True)
class Unlink(Command):
    parent: int = param(positional=True, help="the parent task", complete="task")
    child: int = param(positional=True, help="the waiting task", complete="task")


@verb(
    "comment",
    "Add a note to a task's history",
    role="operator",
    examples=("comment 42 the logs are in /srv/logs",),
)
@dataclass(frozen=True, kw_only=True)
class Comment(Command):
    id: int = param(positional=True, help=_ID, complete="task")
    text: str = param(free_words=True, help="the note")


@verb("caps", "Show the caps: board, profiles, gateways (in use / limit / cap)", role="viewer")
@dataclass(frozen=True, kw_only=True)
class Caps(Command):
    json: bool = param(False, help="machine-readable output")


@verb(
    "caps set",
    "Change a cap live for every process on this board",
    role="admin",
    examples=("caps set board 6", "caps set gateway gpu1 2", "caps set profile researcher 1"),
)
@dataclass(frozen=True, kw_only=True)
class CapsSet(Command):
    scope: str = param(positional=True, choices=SCOPE_CHOICES, help="what to cap")
    name: str | None = param(None, positional=True, help="profile or gateway name", complete="scope")
    value: int = param(positional=True, help="the new cap (0 stops new starts)")


@verb(
    "caps reset",
    "Drop a live cap change; the config value applies again",
    role="admin",
    examples=("caps reset gateway gpu1",),
)
@dataclass(frozen=True, kw_only=True)
class CapsReset(Command):
    scope: str = param(positional=True, choices=SCOPE_CHOICES, help="which cap")
    name: str | None = param(None, positional=True, help="profile or gateway name", complete="scope")


@verb(
    "pause",
    "Stop new starts for the board, a profile or a gateway (running work goes on)",
    role="admin",
    examples=("pause", "pause --profile researcher", "pause --gateway gpu1"),
)
@dataclass(frozen=True, kw_only=True)
class Pause(Command):
    profile: str | None = param(None, help="pause only this profile", complete="profile")
    gateway: str | None = param(None, help="pause only this gateway", complete="gateway")
    board: bool = param(False, help="the whole board (the default)")


@verb("resume", "Resume what pause stopped", role="admin", examples=("resume", "resume --gateway gpu1"))
@dataclass(frozen=True, kw_only=True)
class Resume(Command):
    profile: str | None = param(None, help="resume this profile", complete="profile")
    gateway: str | None = param(None, help="resume this gateway", complete="gateway")
    board: bool = param(False, help="the whole board (the default)")


@verb("status", "Queue shape, gateways and profiles at a glance", role="viewer")
@dataclass(frozen=True, kw_only=True)
class Status(Command):
    chart: bool = param(False, help="also render a PNG of the last hour per gateway")
    json: bool = param(False, help="machine-readable output")
    since: str | None = param(None, help="the chart's window: 15m, 6h (default 1h, at most 1d)")
    output: str | None = param(None, help="where the CLI writes the chart: a .png or a directory")
    watch: bool = param(False, help="a live view refreshed in place on a terminal (Ctrl-C leaves)")
    interval: int = param(2, help="seconds between refreshes of --watch")


@verb(
    "tune",
    "Advise each gateway's cap from the last hour: GPU use, work waiting, latency (changes nothing)",
    role="viewer",
    examples=("tune", "tune gpu1", "tune --apply"),
)
@dataclass(frozen=True, kw_only=True)
class Tune(Command):
    gateway: str | None = param(None, positional=True, help="only this gateway", complete="gateway")
    apply: bool = param(False, help="set the proposed caps (admin only)")
    json: bool = param(False, help="machine-readable output")

    def role_needed(self) -> Role:
        return "admin" if self.apply else self.VERB.role


@verb("windows list", "List scheduled windows", role="viewer")
@dataclass(frozen=True, kw_only=True)
class WindowsList(Command):
    json: bool = param(False, help="machine-readable output")


@verb(
    "windows add",
    "Schedule a command on a cron (standard 5 fields, 0 = Sunday)",
    role="admin",
    examples=(
        'windows add --name night --cron "0 22 * * *" --timezone Europe/Paris '
        '--command "promote-batch --from ready --to active --max 4"',
    ),
)
@dataclass(frozen=True, kw_only=True)
class WindowsAdd(Command):
    name: str = param(positional=True, help="a short name", complete="window")
    cron: str = param(help='minute hour day-of-month month day-of-week, e.g. "*/15 * * * *"')
    command: str = param(help="a board command: promote-batch, promote, pause, resume or digest")
    timezone: str | None = param(None, help="Area/City (default: the host's timezone)")


@verb("windows remove", "Remove a scheduled window", role="admin")
@dataclass(frozen=True, kw_only=True)
class WindowsRemove(Command):
    name: str = param(positional=True, help="the window's name", complete="window")


@verb(
    "subscribe",
    "Send this channel notifications: tasks (cards), alerts or digest",
    role="operator",
    examples=("subscribe alerts",),
)
@dataclass(frozen=True, kw_only=True)
class Subscribe(Command):
    topic: str = param("tasks", positional=True, choices=TOPIC_CHOICES, help="what to receive")
    channel: str | None = param(None, help="another channel than this one (slack:C123, discord:42; admin)")

    def role_needed(self) -> Role:
        # routing cards elsewhere (a private channel, another team's) is an admin's decision
        return "admin" if self.channel else self.VERB.role


@verb("unsubscribe", "Stop notifications to this channel", role="operator")
@dataclass(frozen=True, kw_only=True)
class Unsubscribe(Command):
    topic: str = param("tasks", positional=True, choices=TOPIC_CHOICES, help="what to stop")
    channel: str | None = param(None, help="another channel than this one (admin)")

    def role_needed(self) -> Role:
        return "admin" if self.channel else self.VERB.role


@verb(
    "notify me",
    "A direct message when a task you created finishes or fails (Slack and Discord)",
    role="viewer",
    examples=("notify me on",),
)
@dataclass(frozen=True, kw_only=True)
class NotifyMe(Command):
    state: str = param(positional=True, choices=("on", "off"), help="on to get them, off to stop")


@verb(
    "whoami",
    "Who you are to Lanewarden: your id, your role and where the role comes from",
    role="none",  # a newcomer needs it most: it tells them the id an admin has to add
)
@dataclass(frozen=True, kw_only=True)
class WhoAmI(Command):
    json: bool = param(False, help="machine-readable output")


@verb("digest", "Summarize the last day: finished, failed, waiting, gateways", role="operator")
@dataclass(frozen=True, kw_only=True)
class Digest(Command):
    hours: int = param(24, help="how far back")
    post: bool = param(False, help="also send it to the digest channels")


@verb(
    "web",
    "A private one-time link that signs you in to the web board (same role as here)",
    role="viewer",
    examples=("web",),
)
@dataclass(frozen=True, kw_only=True)
class WebLink(Command):
    pass


@verb("help", "List the commands, or explain one", role="viewer", examples=("help add",))
@dataclass(frozen=True, kw_only=True)
class HelpCommand(Command):
    topic: str | None = param(None, free_words=True, help="a command")
