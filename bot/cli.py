"""``lanewarden``: the board's verbs on the command line, plus the operator commands.

Board verbs (add, list, show, promote, ...) go through the shared grammar in
core/grammar.py exactly as chat commands do. The operator commands (init, db,
console, serve, doctor, discord, simulate-gateway) are parsed here.

Exit status: 0 on success, 2 on bad input or a refused operation (one line on
stderr, nothing changed), 3 when the board database is unreachable, locked or not a
database (one line), 141 when the reader of stdout went away (``| head``), 1 on a bug.
See docs/faults.md.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lanewarden.bot.completion import SHELLS, completion_script
from lanewarden.core.errors import LanewardenError, UsageError

log = logging.getLogger("lanewarden.cli")

EXIT_INFRASTRUCTURE = 3
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool cut off by `head`
OPERATOR_COMMANDS = (
    "init",
    "db",
    "console",
    "serve",
    "doctor",
    "discord",
    "simulate-gateway",
    "completion",
    "import",
)
GLOBAL_OPTIONS = (
    ("--config PATH", "the config file (default: $LANEWARDEN_CONFIG, then ~/.lanewarden/config.toml)"),
    ("--version", "print the version"),
    ("-h, --help", "this help; `COMMAND --help` or `help COMMAND` for one command"),
)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except BrokenPipeError:
        # the reader left (`list --all | head -1`): stop quietly, as `cat` would
        _detach_stdout()
        return EXIT_BROKEN_PIPE


def _main(args: list[str]) -> int:
    try:
        # after `import hermes`, --config names Hermes' config.yaml, not ours
        split = args.index("import") if "import" in args else len(args)
        config_path, head = _take_config_option(args[:split])
        args = head + args[split:]
        if not args or args[0] in ("-h", "--help"):
            args = ["help"]
        if args[0] == "help" and (len(args) == 1 or args[1] in OPERATOR_COMMANDS):
            return _help(args[1:])
        if args[0] in ("--version", "version"):
            from importlib.metadata import version

            print(f"lanewarden {version('lanewarden')}")
            return 0
        if args[0] in OPERATOR_COMMANDS or args[:2] == ["web", "link"]:
            return _operator_command(args, config_path)
        return _board_command(args, config_path)
    except LanewardenError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise
    except Exception as exc:
        from sqlalchemy.exc import DataError, DBAPIError

        if isinstance(exc, DataError):  # e.g. a NUL byte PostgreSQL cannot store: bad input
            return _fail(f"the database refused a value: {_first_line(exc.orig)}", 2)
        if isinstance(exc, DBAPIError):  # unreachable, locked, or not a board database
            return _fail(f"the board database cannot be used: {_first_line(exc.orig)}", EXIT_INFRASTRUCTURE)
        raise


def _fail(message: str, code: int) -> int:
    print(f"lanewarden: error: {message}", file=sys.stderr)
    return code


def _first_line(exc: BaseException | None) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _detach_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _take_config_option(args: list[str]) -> tuple[str | None, list[str]]:
    """``--config PATH`` may appear anywhere before a ``--``."""
    path = None
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg == "--config":
            if i + 1 >= len(args) or not args[i + 1] or args[i + 1].startswith("-"):
                raise UsageError("--config needs a path (--config PATH)")
            path = args[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            path = arg.split("=", 1)[1]
            if not path:
                raise UsageError("--config needs a path (--config=PATH)")
        else:
            rest.append(arg)
        i += 1
    return path, rest


def local_actor(kind: str = "cli"):  # -> Actor
    from lanewarden.core.access import Actor

    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry (containers)
        user = "unknown"
    # whoever can run the CLI can open the database file: the shell is trusted as admin
    trusted = "the shell: whoever can run the CLI can open the board's database"
    return Actor(id=f"{kind}:{user}", role="admin", channel=None, name=user, granted_by=trusted)


def _board_command(args: list[str], config_path: str | None) -> int:
    from lanewarden.bot.render import list_cut_note, render_with_files
    from lanewarden.bot.tools.chart import status_chart_png
    from lanewarden.core.board import open_board
    from lanewarden.core.commands import HelpCommand
    from lanewarden.core.config import load_config
    from lanewarden.core.executor import Executor
    from lanewarden.core.grammar import help_text, parse
    from lanewarden.core.results import TaskList

    command = parse(args)  # bad input fails before touching the database
    if getattr(command, "watch", False) and command.interval < 1:
        raise UsageError("--interval needs a whole number of seconds, 1 or more")
    if isinstance(command, HelpCommand):  # help needs no board: asking never creates one
        print(help_text(command.topic))
        return 0
    config, _ = load_config(config_path)
    board = open_board(config)
    try:
        # `digest --post` sends the status chart along
        executor = Executor(board, chart=status_chart_png)
        result = executor.execute(command, local_actor(), source_text=" ".join(args))
        if getattr(command, "watch", False):  # the live view draws the report itself
            return _live(board, command, result)
        output = render_with_files(result, board)
        if output:
            print(output, flush=True)
        if getattr(command, "follow", False):
            return _live(board, command, result)
        if isinstance(result, TaskList) and result.cut and (command.quiet or command.json):
            # a script looping over the ids must not miss the rest silently
            print(f"lanewarden: {list_cut_note(result)}", file=sys.stderr)
        if result.verb == "promote-batch" and not sys.stdout.isatty():
            # for host cron: a timestamped line in its log (on a terminal, stdout said it already)
            promoted = ", ".join(t.ref for t in result.tasks) or "nothing"  # type: ignore[attr-defined]
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
            log.info("promote-batch %s: %s", " ".join(args[1:]), promoted)
        return 0
    finally:
        board.db.dispose()


def _live(board, command, result) -> int:  # Board, Command, Result
    """``logs --follow`` and ``status --watch`` after the first answer; Ctrl-C leaves with 0."""
    from lanewarden.bot.live import follow_logs, watch_status

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        if getattr(command, "watch", False):
            watch_status(board, command.interval, write, terminal=sys.stdout.isatty())
        else:
            follow_logs(board, result, write)
    except KeyboardInterrupt:
        write("\n")
    return 0


def operator_parser() -> argparse.ArgumentParser:
    """The operator commands, whose options argparse owns (the board verbs' are the grammar's)."""
    # imported here, not at the top: board verbs start faster without aiohttp
    from lanewarden.bot.simulator import add_simulator_options

    parser = argparse.ArgumentParser(prog="lanewarden", description="Lanewarden operator commands")
    sub = parser.add_subparsers(dest="op", required=True)

    init = sub.add_parser("init", help="write a commented starter config and create the board")
    init.add_argument("--path", help="where to write the config (default: ~/.lanewarden/config.toml)")
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.add_argument(
        "--example",
        choices=("guide",),
        help="add an example setup: guide = the Hermes Kanban guide's gpu1 and its three profiles",
    )
    init.add_argument(
        "--admin",
        action="append",
        default=[],
        help="the first admin: slack:U0123ABCD or discord:<user id> (repeatable; asked on a terminal)",
    )

    db = sub.add_parser("db", help="database maintenance")
    db.add_argument("action", choices=("upgrade", "current"))

    sub.add_parser("console", help="a terminal REPL over the board's commands")

    serve = sub.add_parser("serve", help="run the dispatcher, scheduler, HTTP endpoint and chat adapters")
    serve.add_argument("--headless", action="store_true", help="no console (for daemons)")
    serve.add_argument(
        "--demo", action="store_true", help="start a simulated gateway and a seeded board (no GPU needed)"
    )

    sub.add_parser("doctor", help="check config, database, leader, gateways and queue")

    discord = sub.add_parser("discord", help="Discord helpers")
    discord_sub = discord.add_subparsers(dest="discord_op", required=True)
    sync = discord_sub.add_parser("sync", help="register the /kanban commands")
    sync.add_argument("--guild", type=int, help="a guild id (instant); global otherwise")

    web = sub.add_parser("web", help="the web board")
    web_sub = web.add_subparsers(dest="web_op", required=True)
    link = web_sub.add_parser("link", help="print a one-time sign-in link for someone")
    link.add_argument("--user", required=True, help="who signs in (recorded as web:USER)")
    link.add_argument("--role", required=True, choices=("viewer", "operator", "admin"))
    link.add_argument("--minutes", type=int, help="how long the link works (default: [web] link_minutes)")

    add_simulator_options(
        sub.add_parser("simulate-gateway", help="an OpenAI-compatible GPU server simulator on loopback")
    )

    importer = sub.add_parser("import", help="bring boards over from another tool")
    source = importer.add_subparsers(dest="source", required=True)
    hermes = source.add_parser("hermes", help="Hermes Kanban board files (docs/hermes.md)")
    hermes.add_argument("paths", nargs="*", metavar="PATH", help="board files (default: ~/.hermes/kanban.db)")
    hermes.add_argument("--config", dest="hermes_config", help="Hermes' config.yaml, for its kanban: caps")
    hermes.add_argument("--dry-run", action="store_true", help="report what would be imported; write nothing")

    completion = sub.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=SHELLS)
    return parser


def _operator_command(args: list[str], config_path: str | None) -> int:
    from lanewarden.bot.simulator import run_simulator

    opts = operator_parser().parse_args(args)
    if opts.op == "completion":
        print(completion_script(opts.shell, _operator_flags()))
        return 0
    if opts.op == "init":
        return _init(opts.path, opts.force, config_path, opts.admin, opts.example)
    if opts.op == "simulate-gateway":
        return run_simulator(opts)

    from lanewarden.core.config import load_config

    if opts.op == "doctor":  # before loading: a bad config is one of the things it reports
        from lanewarden.bot.tools.doctor import doctor

        return doctor(config_path)
    config, _ = load_config(config_path)
    if opts.op == "db":
        from lanewarden.core.db import Database, current_revision, upgrade

        database = Database(config.board.url)
        if opts.action == "upgrade":
            upgrade(database)
        print(f"{database.describe()}: revision {current_revision(database) or 'none'}")
        return 0
    if opts.op == "console":
        from lanewarden.bot.console import Console
        from lanewarden.core.board import open_board
        from lanewarden.core.executor import Executor

        Console(Executor(open_board(config)), local_actor("console"), config_path=config_path).run()
        return 0
    if opts.op == "serve":
        from lanewarden.bot.serve import serve

        return serve(config, headless=opts.headless, demo=opts.demo)
    if opts.op == "web":
        return _web_link(config, opts.user, opts.role, opts.minutes)
    if opts.op == "import":
        return _import_hermes(config, opts.paths, opts.hermes_config, opts.dry_run)
    if opts.op == "discord":
        from lanewarden.bot.discord_app import sync_commands

        return sync_commands(config, opts.guild)
    return 2


def _import_hermes(config, paths: list[str], hermes_config: str | None, dry_run: bool) -> int:
    from lanewarden.bot.tools.hermes_import import import_hermes
    from lanewarden.core.board import open_board

    board = open_board(config)
    try:
        chosen = [Path(p) for p in paths] or [Path("~/.hermes/kanban.db")]
        report = import_hermes(board, chosen, Path(hermes_config) if hermes_config else None, dry_run=dry_run)
        print(report.text(dry_run))
        return 0
    finally:
        board.db.dispose()


def _help(topic: list[str]) -> int:
    """``help`` for everything: the board verbs (from the grammar), the operator commands
    and the global options; ``help serve`` shows an operator command's own options."""
    from lanewarden.core.grammar import help_text

    if topic:
        return _operator_command([topic[0], "--help"], None)
    lines = [help_text(), "", "operator commands (lanewarden COMMAND --help for its options):"]
    choices = _subcommands(operator_parser())
    width = max(len(name) for name in choices)
    lines += [f"  {name:<{width}}  {action.help}" for name, action in choices.items()]
    lines += ["", "options:"]
    lines += [f"  {flags:<16} {text}" for flags, text in GLOBAL_OPTIONS]
    print("\n".join(lines))
    return 0


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub._choices_actions}


def _operator_flags() -> dict[str, list[str]]:
    """Each operator command's flags, for the completion scripts."""
    sub = next(a for a in operator_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: [flag for action in parser._actions for flag in action.option_strings if flag.startswith("--")]
        for name, parser in sub.choices.items()
    }


def _web_link(config, user: str, role: str, minutes: int | None) -> int:  # config: LanewardenConfig
    from lanewarden.core.board import open_board
    from lanewarden.core.signin import mint_link, sign_in_url, web_base_url

    name = user.strip()
    if not name or len(name) > 64 or any(c.isspace() for c in name):
        print("lanewarden: error: --user needs a short name without spaces", file=sys.stderr)
        return 2
    web_base_url(config)  # refuses when the board page is off
    board = open_board(config)
    try:
        link = mint_link(
            board,
            actor_id=f"web:{name}",
            role=role,
            name=name,
            created_by=local_actor().id,
            minutes=minutes or config.web.link_minutes,
        )
    finally:
        board.db.dispose()
    # the link is the secret: it goes to this terminal only, never to a log
    print(sign_in_url(config, link.token))
    print(
        f"signs in web:{name} as {role}; works once, until "
        f"{link.sign_in.expires_at.isoformat(timespec='seconds')}",
        file=sys.stderr,
    )
    return 0


def _init(
    path: str | None, force: bool, config_path: str | None, admins: list[str], example: str | None = None
) -> int:
    from importlib.resources import files

    from lanewarden.core.access import check_person
    from lanewarden.core.board import open_board
    from lanewarden.core.config import lanewarden_home, load_config

    target = Path(path or config_path or lanewarden_home() / "config.toml").expanduser()
    if target.exists() and not force:
        print(f"lanewarden: error: {target} exists; use --force to overwrite", file=sys.stderr)
        return 2
    admins = [check_person(a) for a in admins] or _ask_for_admin()
    board_path = lanewarden_home() / "board.db"
    text = files("lanewarden.core").joinpath("starter_config.toml").read_text(encoding="utf-8")
    text = text.replace("{board_path}", str(board_path))
    if example:
        text += files("lanewarden.core").joinpath(f"{example}_example.toml").read_text(encoding="utf-8")
    if admins:
        # without an admin nobody can change caps, pauses or windows from chat
        text = text.replace("# [access] ", "[access]   ", 1).replace(
            '# admins = ["slack:U0123ABCD"]', "admins = [" + ", ".join(f'"{a}"' for a in admins) + "]", 1
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    config, _ = load_config(target)
    board = open_board(config)
    print(f"wrote {target}")
    print(f"board ready at {board.db.describe()}")
    if config.access.admins:
        print(f"admins: {', '.join(config.access.admins)}")
    else:
        print(
            "no admin yet: everyone is a viewer; add one with `lanewarden init --admin slack:U...` "
            f"or under [access] admins in {target}",
            file=sys.stderr,
        )
    return 0


def _ask_for_admin() -> list[str]:
    """On a terminal, ask for the first admin until the answer is valid or empty."""
    from lanewarden.core.access import check_person

    if not sys.stdin.isatty():
        return []
    while True:
        try:
            answer = input("First admin (slack:U0123ABCD or discord:<user id>, empty to skip): ").strip()
        except EOFError:
            return []
        if not answer:
            return []
        try:
            return [check_person(answer)]
        except LanewardenError as exc:
            print(exc, file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
