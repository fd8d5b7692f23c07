"""Live prompt experiments: A/B and shadow tests of prompt versions on live traffic, decided with statistics.

- `assignment`: which arm answers a request (a hash, no database round trip);
- `stats`: estimates, differences, tests and the fixed-horizon decision, from sufficient statistics;
- `results`: an experiment's numbers per arm, from the daily rollups (ab) or the shadow answers (shadow);
- `services`: create, start, stop, promote, roll back; `evaluation`: what beat runs (guardrails, the decision);
- `shadow`: a shadow candidate's answer to one request, run by a worker;
- `apis`, `serializers`, `urls`: `/api/intent/experiments/`.
"""
