"""Figures: they draw records and fitted laws and never fit (the laws' types and constants only).
`plots` holds the scaling curves, frontier, sizes, samplers and backtest figures;
`headline_plots` the α profile and backtests; `compute_split_plots` the pretraining/tuning split."""
