"""Operator tools: doctor, the status chart and the demo."""
