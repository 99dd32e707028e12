"""A sweep's analysis: every law fitted once and cached in `_analysis/` (`fits`), the Markdown
report (`report`, `report_headline`) and the driver fit -> figures -> report (`pipeline`).
The top layer: it uses every other part of analysis, and nothing in analysis imports it."""
