"""Custom boards: staff's saved widgets (`widgets`: one metric × one breakdown × filters × period, read as the reports
read), shared per user, group or all staff (`services`), served and exported by `/api/analytics/boards/` (`apis`)."""
