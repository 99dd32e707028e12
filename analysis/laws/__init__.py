"""The laws and their fits, all through `analysis.estimator`: the law types and their fit functions
on arrays (`powerlaw`: `fit_power_law`, `fit_joint_power_law`), the same per curve of a records
frame as tidy tables (`tables`: `fit_results`, `fit_joint_results`), the compute frontier
(`frontier`), the headline quantities (`headline`), backtests within runs (`backtest`) and of a
held-out size (`holdout`), and the pretraining/tuning split (`compute_split`)."""
