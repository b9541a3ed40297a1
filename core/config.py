"""Configuration: TOML, found on a search path, validated by pydantic.

An invalid file is reported as one line per problem naming the key, the bad value
and what is allowed, e.g. ``gateways.gpu.max_concurrency = 0: must be >= 1``.
The keys of the Hermes Kanban guides (``[kanban.dispatcher]``, ``[kanban.workers]``,
``[[scheduler.jobs]]``) are accepted exactly as they write them.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import string
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from lanewarden.core.errors import ConfigError
from lanewarden.core.redaction import hide_url_password, secret_kind
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

GatewayKind = Literal["openai", "ollama", "vllm", "llamacpp", "litellm"]
RunnerKind = Literal["llm", "command", "noop"]
Role = Literal["viewer", "operator", "admin"]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
# what the command runner sets itself, from the profile and its gateway
AGENT_VARIABLES = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_MODEL")


def lanewarden_home() -> Path:
    """Where the embedded board and the user config live (``$LANEWARDEN_HOME``)."""
    return Path(os.environ.get("LANEWARDEN_HOME") or Path.home() / ".lanewarden").expanduser()


def default_board_url() -> str:
    return f"sqlite:///{lanewarden_home() / 'board.db'}"


class _Section(BaseModel):
    # strict: `enabled = "yes"` or `max_concurrency = "4"` is a mistake to report, not to guess
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DispatcherConfig(_Section):
    enabled: bool = True
    poll_interval_seconds: float = Field(5.0, gt=0, le=3600)
    max_active_tasks: int = Field(4, ge=1, le=100_000)
    lease_seconds: float = Field(30.0, ge=1, le=3600)
    heartbeat_seconds: float = Field(5.0, gt=0, le=600)
    drain_timeout_seconds: float = Field(30.0, ge=0, le=3600)
    retry_backoff_seconds: float = Field(10.0, ge=0, le=86_400)
    retry_backoff_max_seconds: float = Field(600.0, ge=0, le=86_400)
    max_claims_per_transaction: int = Field(32, ge=1, le=1000)

    @model_validator(mode="after")
    def _heartbeat_inside_lease(self) -> DispatcherConfig:
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError(
                f"heartbeat_seconds ({self.heartbeat_seconds}) must be at most half of "
                f"lease_seconds ({self.lease_seconds}) so one missed heartbeat does not lose the lease"
            )
        return self


class WorkersConfig(_Section):
    profile: Name = "default"
    max_parallel_per_profile: int = Field(2, ge=1, le=100_000)
    # command agents' workspaces (core/workspaces.py): which to keep when a run ends, and how long
    keep_workspaces: Literal["failed", "all", "none"] = "failed"
    keep_workspaces_days: float = Field(7.0, ge=0)


class KanbanConfig(_Section):
    dispatcher: DispatcherConfig = DispatcherConfig()
    workers: WorkersConfig = WorkersConfig()


class BoardConfig(_Section):
    url: str = Field(default_factory=default_board_url)

    @field_validator("url")
    @classmethod
    def _known_engine(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "sqlite+pysqlite:", "postgresql")):
            raise ValueError("must start with sqlite:/// or postgresql+psycopg://")
        return value


class GatewayConfig(_Section):
    base_url: str
    kind: GatewayKind = "openai"
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    max_concurrency: int = Field(1, ge=1, le=10_000)
    timeout_seconds: float = Field(600.0, gt=0, le=86_400)
    adaptive: bool = False
    # adaptive only: time per token beyond this multiple of its no-load value makes the
    # limiter step down at once (a safety net; throughput is what it climbs on), and how
    # often the no-load baseline is measured again
    adaptive_tolerance: float = Field(4.0, gt=1, le=20)
    adaptive_probe_interval_seconds: float = Field(120.0, ge=5, le=86_400)
    probe_interval_seconds: float = Field(10.0, gt=0, le=3600)
    # Prometheus endpoints of the gateway's host (dcgm-exporter, node_exporter, AMD
    # device-metrics-exporter), scraped by the leader on the probe interval
    node_metrics: list[str] = []

    @field_validator("node_metrics")
    @classmethod
    def _metrics_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} must be an http:// URL such as http://gpu1:9400/metrics")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL such as http://127.0.0.1:11434/v1")
        return value.rstrip("/")

    def api_key(self) -> str:
        """The secret itself, read from the environment at the moment it is needed."""
        if self.api_key_env:
            return os.environ.get(self.api_key_env, "")
        return ""


class ProfileConfig(_Section):
    gateway: Name | None = None
    model: str | None = None
    runner: RunnerKind = "llm"
    system_prompt: str = ""
    command: list[str] | None = None
    max_parallel: int | None = Field(None, ge=1, le=100_000)
    timeout_seconds: float | None = Field(None, gt=0, le=86_400)
    max_runtime_seconds: float | None = Field(None, gt=0, le=7 * 86_400)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    # extra fields for the chat completions body: temperature, top_p, logit_bias, ...
    request_params: dict[str, Any] = {}
    # a command agent's environment beyond the documented minimum (core/runners/agent_env.py)
    env: dict[EnvName, str] = {}
    pass_env: list[EnvName] = []

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        if isinstance(value, str):
            return shlex.split(value)
        return value

    @field_validator("command")
    @classmethod
    def _user_text_cannot_be_an_option(cls, value: list[str] | None) -> list[str] | None:
        exposed = exposed_positional(value or [])
        if exposed is not None:
            raise ValueError(
                f"{exposed!r} fills a whole argument, so a title starting with '-' would become an "
                f'option of the agent; put "--" before it or attach it to an option ("--query={{prompt}}")'
            )
        return value

    @model_validator(mode="after")
    def _runner_needs(self) -> ProfileConfig:
        if self.runner == "llm" and (self.gateway is None or not self.model):
            raise ValueError("runner 'llm' needs both 'gateway' and 'model'")
        if self.runner == "command" and not self.command:
            raise ValueError("runner 'command' needs 'command' (an argv list or a shell-like string)")
        return self


# placeholders that carry user text (the prompt begins with the title)
USER_TEXT_PLACEHOLDERS = ("title", "prompt")


def exposed_arguments(argv: list[str]) -> list[int]:
    """Indexes of the argv elements a user's text could turn into an option.

    An element is exposed when it begins with ``{title}`` or ``{prompt}`` (nothing but
    dashes before it) and no ``--`` precedes it; ``--query={prompt}`` and ``-- {prompt}``
    are safe."""
    exposed = []
    for index, part in enumerate(argv):
        if part == "--":
            break
        try:
            pieces = list(string.Formatter().parse(part))
        except ValueError:
            continue  # a malformed template fails the run with its own message
        if pieces:
            literal, field_name, _spec, _conv = pieces[0]
            if field_name in USER_TEXT_PLACEHOLDERS and not literal.strip("-"):
                exposed.append(index)
    return exposed


def takes_value(argv: list[str], index: int) -> bool:
    """Whether ``argv[index]`` follows an option such as ``-q`` (so it is that option's value)."""
    before = argv[index - 1] if index > 0 else ""
    return before.startswith("-") and before != "-" and "=" not in before and "{" not in before


def exposed_positional(argv: list[str]) -> str | None:
    """An exposed element that is not an option's value: a profile with one is refused."""
    return next((argv[i] for i in exposed_arguments(argv) if not takes_value(argv, i)), None)


class JobConfig(_Section):
    name: Name
    cron: str
    timezone: str | None = None
    command: str


class SchedulerConfig(_Section):
    enabled: bool = True
    jobs: list[JobConfig] = []
    misfire_grace_seconds: int = Field(300, ge=1, le=86_400)
    leader_lease_seconds: float = Field(15.0, ge=1, le=3600)


class AlertsConfig(_Section):
    interval_seconds: float = Field(30.0, gt=0, le=3600)
    cooldown_seconds: float = Field(900.0, ge=0, le=86_400)
    error_rate: float = Field(0.2, gt=0, le=1)
    timeout_rate: float = Field(0.1, gt=0, le=1)
    min_samples: int = Field(5, ge=1)
    oldest_ready_seconds: float = Field(3600.0, gt=0)
    server_queue: int = Field(4, ge=1)
    latency_rise_ratio: float = Field(2.0, gt=1)
    max_runtime_seconds: float = Field(3600.0, gt=0)
    # node exporters: VRAM used share, GPU busy percent that counts as saturated (with
    # latency rising), and the available RAM share below which the host is short of it
    vram_usage: float = Field(0.95, gt=0, le=1)
    gpu_saturated_percent: float = Field(90.0, gt=0, le=100)
    ram_available_min: float = Field(0.1, gt=0, lt=1)
    digest_cron: str | None = "0 9 * * *"


class HttpConfig(_Section):
    listen: str | None = "127.0.0.1:8787"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        _host, sep, port = value.rpartition(":")
        if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) <= 65535:
            raise ValueError("must be host:port, e.g. 127.0.0.1:8787 (port 0 picks a free one)")
        return value


class WebConfig(_Section):
    """The live board page on the [http] endpoint. ``public_url`` is how people reach it
    (the reverse proxy's https address); sign-in links are built on it."""

    enabled: bool = True
    public_url: str | None = None
    link_minutes: int = Field(10, ge=1, le=60)
    session_hours: float = Field(12.0, gt=0, le=24 * 30)
    page_size: int = Field(50, ge=10, le=500)

    @field_validator("public_url")
    @classmethod
    def _web_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL such as https://board.example.com")
        return value.rstrip("/")


class SlackConfig(_Section):
    """``mode``: socket (SLACK_APP_TOKEN, no public URL) or http (SLACK_SIGNING_SECRET,
    Slack posts to ``events_path`` on the [http] endpoint). ``api_base`` points the Web
    API client elsewhere (a proxy). Channels are ids (C0123ABCD), not names: cards and
    the idempotency checks address channels by id."""

    mode: Literal["socket", "http"] = "socket"
    api_base: str | None = None
    events_path: str = "/slack/events"
    alert_channel: str | None = None
    notify_channel: str | None = None

    @field_validator("alert_channel", "notify_channel")
    @classmethod
    def _channel_id(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not re.fullmatch(r"[CGD][A-Z0-9]{2,}", value):
            raise ValueError(
                "must be a channel id such as C0123ABCD (in Slack: channel details > About), not a name"
            )
        return value

    @field_validator("events_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9/_.-]*", value):
            raise ValueError("must be a URL path such as /slack/events")
        return value

    @field_validator("api_base")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL such as https://slack.com/api/")
        return value.rstrip("/") + "/"  # slack-sdk joins method names onto it


class DiscordConfig(_Section):
    api_base: str | None = None
    gateway_url: str | None = None
    guild_ids: list[int] = []  # when set, interactions from any other server are refused
    allow_dms: bool = False  # /kanban in direct messages to the bot (roles by user id only)
    notify_channel_id: int | None = None
    alert_channel_id: int | None = None


class AccessConfig(_Section):
    """Chat identities mapped to roles: ``slack:U123``, ``slack-group:S1``, ``discord:42``,
    ``discord-role:7``. Anyone unlisted gets ``default_role``."""

    admins: list[str] = []
    operators: list[str] = []
    viewers: list[str] = []
    default_role: Role | Literal["none"] = "viewer"


class LanewardenConfig(_Section):
    board: BoardConfig = BoardConfig()
    kanban: KanbanConfig = KanbanConfig()
    gateways: dict[Name, GatewayConfig] = {}
    profiles: dict[Name, ProfileConfig] = {}
    scheduler: SchedulerConfig = SchedulerConfig()
    alerts: AlertsConfig = AlertsConfig()
    http: HttpConfig = HttpConfig()
    web: WebConfig = WebConfig()
    slack: SlackConfig = SlackConfig()
    discord: DiscordConfig = DiscordConfig()
    access: AccessConfig = AccessConfig()

    @model_validator(mode="after")
    def _references_resolve(self) -> LanewardenConfig:
        for name, profile in self.profiles.items():
            if profile.gateway is not None and profile.gateway not in self.gateways:
                known = ", ".join(sorted(self.gateways)) or "none configured"
                raise ValueError(
                    f"profiles.{name}.gateway = {profile.gateway!r}: no such gateway (known: {known})"
                )
        return self

    @model_validator(mode="after")
    def _agents_get_no_secrets(self) -> LanewardenConfig:
        for name, profile in self.profiles.items():
            for key, variables in (("env", list(profile.env)), ("pass_env", profile.pass_env)):
                for variable in variables:
                    if variable in AGENT_VARIABLES:
                        raise ValueError(
                            f"profiles.{name}.{key}: {variable} is set by Lanewarden "
                            "from the profile's gateway"
                        )
                    kind = secret_kind(variable, self, own_gateway=profile.gateway)
                    if kind is not None:
                        raise ValueError(
                            f"profiles.{name}.{key}: {variable} is {kind}; agents never receive it"
                        )
        return self

    def profile(self, name: str) -> ProfileConfig | None:
        return self.profiles.get(name)

    def profile_cap(self, name: str) -> int:
        profile = self.profiles.get(name)
        if profile is not None and profile.max_parallel is not None:
            return profile.max_parallel
        return self.kanban.workers.max_parallel_per_profile

    @property
    def default_profile(self) -> str:
        return self.kanban.workers.profile


def builtin_defaults() -> dict[str, Any]:
    """Used when no config file exists: a local Ollama behind one profile."""
    return {
        "gateways": {
            "local": {"base_url": "http://127.0.0.1:11434/v1", "kind": "ollama", "max_concurrency": 1}
        },
        "profiles": {"default": {"gateway": "local", "model": "llama3.2", "runner": "llm"}},
    }


def config_search_path(explicit: str | os.PathLike[str] | None = None) -> list[Path]:
    if explicit:
        return [Path(explicit).expanduser()]
    candidates: list[Path] = []
    env = os.environ.get("LANEWARDEN_CONFIG")
    if env:
        return [Path(env).expanduser()]
    candidates.append(Path.cwd() / "lanewarden.toml")
    candidates.append(lanewarden_home() / "config.toml")
    return candidates


def find_config_file(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The first existing file on the search path; an explicit path must exist."""
    paths = config_search_path(explicit)
    if explicit or os.environ.get("LANEWARDEN_CONFIG"):
        if not paths[0].is_file():
            raise ConfigError(f"config file {paths[0]} does not exist")
        return paths[0]
    return next((p for p in paths if p.is_file()), None)


def load_config(explicit: str | os.PathLike[str] | None = None) -> tuple[LanewardenConfig, Path | None]:
    path = find_config_file(explicit)
    if path is None:
        return parse_config(builtin_defaults(), source="built-in defaults"), None
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_config(raw, source=str(path)), path


def parse_config(raw: dict[str, Any], source: str = "config") -> LanewardenConfig:
    if "profiles" not in raw and "gateways" not in raw:
        raw = {**builtin_defaults(), **raw}
    try:
        return LanewardenConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [describe_error(err, raw) for err in exc.errors()]
        raise ConfigError(f"{source}: " + "; ".join(lines)) from None


def describe_error(err: Any, raw: dict[str, Any]) -> str:
    """One readable line: ``key = value: what is allowed``."""
    loc = [str(part) for part in err["loc"]]
    key = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], allowed, n=1) if allowed else []
        hint = f" (did you mean {close[0]}?)" if close else ""
        hint += f"; allowed here: {', '.join(allowed)}" if allowed else ""
        return f"{key}: unknown key{hint}"
    if err["type"] == "missing":
        return f"{key}: required key is missing"
    message = str(err["msg"]).removeprefix("Value error, ")
    message = message.replace("Input should be", "must be")
    if err["type"] in ("value_error", "assertion_error") and err["loc"] == ():
        return message
    value = _lookup(raw, loc)
    shown = "" if value is _MISSING or isinstance(value, dict | list) else f" = {value!r}"
    shown = hide_url_password(shown)  # a bad board.url must not print its password
    return f"{key}{shown}: {message}"


_MISSING = object()


def _lookup(raw: Any, loc: list[str]) -> Any:
    node = raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _allowed_keys(loc: list[str]) -> list[str]:
    model: Any = LanewardenConfig
    for part in loc:
        if model is None or not hasattr(model, "model_fields"):
            return []
        field = model.model_fields.get(part)
        if field is None:
            # inside dict[str, Model] or list[Model] the next part is a name or index
            continue
        model = _model_of(field.annotation)
    return sorted(model.model_fields) if model is not None and hasattr(model, "model_fields") else []


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def server_root(base_url: str) -> str:
    """``http://h:8000/v1`` -> ``http://h:8000`` (health and metrics live at the root)."""
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url
