"""Template-gap mining: what users ask that the catalog does not serve. The period's stored messages that were out
of scope, matched no template or had a low confidence are clustered (`mining`, scikit-learn's HDBSCAN); each cluster
(size, share, daily trend, top terms, representative redacted examples, a suggested name) can become a new intent,
inactive until a person turns it on (`services.gap_cluster_adopt`, an admin action).

- `mining`: messages in, clusters out (no database);
- `services`: a mining run over the period's details, stored (`GapMining`, `GapCluster`); adopting a cluster;
- `selectors`: the latest run as plain data (analytics' `GET /api/analytics/mlflow/gaps` reads it by dotted path).
"""
