"""Monitors: thresholds, anomalies and drift over the window rollups, alerts on every state change, notifications.

`windows` reads the window rollups of a span once and answers any window and filter from them; `evaluation`
decides a monitor's state from them (pure); `services` evaluates the monitors, records their alerts and asks for
delivery; `delivery` sends a notification through apprise; `preview` replays a monitor over past days.
"""
