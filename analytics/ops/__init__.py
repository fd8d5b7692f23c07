"""Operating the analytics pipeline: its health (`health`) and experiment maintenance, over HTTP (`apis`)."""
