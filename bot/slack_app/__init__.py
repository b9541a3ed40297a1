"""The Slack front end: ``/kanban`` over the board's grammar, task cards edited in
place, buttons, App Home, and the outbox sink that delivers notifications.

Modules: ``adapter`` (transports and wiring), ``listeners`` (slash command, buttons,
App Home), ``blocks`` (Block Kit rendering), ``sink`` (outbox delivery),
``identity`` (Slack users and user groups to roles), ``mrkdwn`` (Slack's text format).
"""
