"""Model-agnostic math: quadrature rules, integrated-Jacobian projections, interactions."""
