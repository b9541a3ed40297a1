"""``lanewarden completion bash|zsh|fish``: shell completion generated from the grammar.

The scripts are static: every verb, sub-verb and flag comes from the grammar's registry
(and the operator commands' parsers), so they can never list an option the CLI refuses.
Flag values with a fixed set of choices (``--column``, ``--status``) complete too.
"""

from __future__ import annotations

from lanewarden.core.grammar import REGISTRY

SHELLS = ("bash", "zsh", "fish")


def _verb_table(operator_flags: dict[str, list[str]]) -> dict[str, dict[str, list[str]]]:
    """head word -> {sub-verb or "": flags}."""
    table: dict[str, dict[str, list[str]]] = {}
    for name, spec in REGISTRY.items():
        head, _, rest = name.partition(" ")
        flags = sorted({f"--{flag}" for p in spec.params for flag in p.flags} | {"--help"})
        table.setdefault(head, {})[rest] = flags
    for name, flags in operator_flags.items():
        table.setdefault(name, {})[""] = sorted(set(flags) | {"--help"})
    return table


def _choices() -> dict[str, list[str]]:
    found: dict[str, set[str]] = {}
    for spec in REGISTRY.values():
        for p in spec.params:
            if p.choices:
                for flag in p.flags:
                    found.setdefault(f"--{flag}", set()).update(p.choices)
    return {flag: sorted(values) for flag, values in found.items()}


def completion_script(shell: str, operator_flags: dict[str, list[str]]) -> str:
    table = _verb_table(operator_flags)
    if shell == "bash":
        return _bash(table)
    if shell == "zsh":
        return "autoload -U bashcompinit && bashcompinit\n" + _bash(table)
    return _fish(table)


def _bash(table: dict[str, dict[str, list[str]]]) -> str:
    heads = " ".join(sorted(table))
    cases = []
    for head, subs in sorted(table.items()):
        named = sorted(s for s in subs if s)
        if named:
            sub_cases = "".join(f'                {sub}) opts="{" ".join(subs[sub])}" ;;\n' for sub in named)
            plain = " ".join(subs.get("", []))
            cases.append(
                f"        {head})\n"
                f'            case "${{COMP_WORDS[2]}}" in\n{sub_cases}'
                f'                *) opts="{" ".join(named)} {plain}" ;;\n'
                "            esac ;;\n"
            )
        else:
            cases.append(f'        {head}) opts="{" ".join(subs[""])}" ;;\n')
    values = "".join(
        f'        {flag}) COMPREPLY=($(compgen -W "{" ".join(v)}" -- "$cur")); return ;;\n'
        for flag, v in sorted(_choices().items())
    )
    return (
        '# lanewarden completion for bash: eval "$(lanewarden completion bash)"\n'
        "_lanewarden() {\n"
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" opts\n'
        '    case "$prev" in\n' + values + "    esac\n"
        '    if [ "$COMP_CWORD" -eq 1 ]; then\n'
        f'        COMPREPLY=($(compgen -W "{heads} help --config --version --help" -- "$cur")); return\n'
        "    fi\n"
        '    case "${COMP_WORDS[1]}" in\n' + "".join(cases) + '        help) opts="' + heads + '" ;;\n'
        '        *) opts="" ;;\n'
        "    esac\n"
        '    COMPREPLY=($(compgen -W "$opts" -- "$cur"))\n'
        "}\n"
        "complete -F _lanewarden lanewarden\n"
    )


def _fish(table: dict[str, dict[str, list[str]]]) -> str:
    lines = [
        "# lanewarden completion for fish: lanewarden completion fish | source",
        "complete -c lanewarden -f",
    ]
    heads = sorted(table)
    lines.append(f"complete -c lanewarden -n __fish_use_subcommand -a '{' '.join([*heads, 'help'])}'")
    choices = _choices()
    for head, subs in sorted(table.items()):
        named = sorted(s for s in subs if s)
        if named:
            lines.append(
                f"complete -c lanewarden -n '__fish_seen_subcommand_from {head}' -a '{' '.join(named)}'"
            )
        for flags in subs.values():
            for flag in flags:
                values = choices.get(flag)
                extra = f" -x -a '{' '.join(values)}'" if values else ""
                lines.append(
                    f"complete -c lanewarden -n '__fish_seen_subcommand_from {head}' -l {flag[2:]}{extra}"
                )
    return "\n".join(dict.fromkeys(lines)) + "\n"
