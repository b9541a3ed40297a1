"""The HTTP endpoint of `serve`: health, Prometheus metrics and Slack events."""
