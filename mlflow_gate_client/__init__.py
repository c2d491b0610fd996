"""MLflow client sign-in for the MLflow gate: `MLFLOW_TRACKING_AUTH=mlflow-gate`.

Sign in once with `python -m mlflow_gate_client login`; afterwards every MLflow request carries a
fresh access token, refreshed from the stored refresh token.
"""
