"""The analytics reports (contract A), read from the mirror's rollups: what a report covers (`scope`), the sums it
reads (`cells`), the reports themselves (`selectors`), their exports (`exports`), and their HTTP interface
(`serializers`, `examples`, `apis`)."""
