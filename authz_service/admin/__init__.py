"""`mlflow-gate-admin`: manage who may use MLflow through the gate, on Keycloak's admin API.

One module per noun (users, roles, robots, sessions, explain), each adding its own argparse
sub-parser; `cli.main` wires them together and turns every failure into one line on stderr.
"""
