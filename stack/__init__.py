"""Local, Docker-free stack for developing and testing the MLflow gate.

Runs Keycloak, Redis, MLflow, the gate and NGINX as plain loopback processes so the
integration and browser tests exercise the same realm file and NGINX template that the
Docker deployment uses. Standard library only: it must run before any venv exists.
"""
