"""Reading Slack's failures: the error code of a Web API refusal, whatever its shape."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError


def slack_error_code(exc: SlackApiError) -> str:
    """``not_in_channel``, ``ratelimited``, ...; the HTTP status when the body was not JSON."""
    data = exc.response.data
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return str(exc.response.status_code)
