"""Records and runs: the Parquet records read into a frame (`load`), one curve per configuration
(`variants`), the points a fit may use (`points`) and each curve's seeds by budget with the noise
model that intervals resample (`runs`). The bottom layer: it imports no other part of analysis."""
