"""INT8: Q/DQ files made from the static file (quantize), accuracy control (sensitivity), and the per-family INT8 risk report (risk)."""
