"""MLflow client sign-in for the MLflow gate: `MLFLOW_TRACKING_AUTH=mlflow-gate`.

Two ways to get tokens: a person signs in once with `mlflow-gate-client login` (device flow) and
every process on the machine shares that stored sign-in; a robot sets MLFLOW_GATE_CLIENT_ID and
MLFLOW_GATE_CLIENT_SECRET. Either way each MLflow request carries an access token refreshed shortly
before it expires. This distribution never imports the gate's server code.
"""
