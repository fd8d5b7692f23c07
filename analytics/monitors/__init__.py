"""Monitors: thresholds, anomalies and drift over the window rollups, alerts on every state change, notifications.

`reading` reads the window rollups a set of windows needs (with a per-process cache of unchanged buckets);
`windows` answers any window and filter from them; `outcome` grades a value against thresholds; `evaluation` and
`drift` decide a monitor's state from them (pure); `services` evaluates the monitors, records their alerts and asks for
delivery; `delivery` sends a notification through apprise; `preview` replays a monitor over past days.
"""
