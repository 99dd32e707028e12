"""The one estimator every law is fitted with: `solver.fit_problem` fits any sum of power terms
with a floor (variable projection, L-BFGS-B, multi-start agreement) and bootstraps it, its
resamples refitted together by `batched`. Laws (`analysis.laws`) call it; nothing else does."""
