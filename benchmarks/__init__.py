"""The benchmark harness: `python3 -m benchmarks [--quick]` (README, "Benchmarks").

It starts what it needs on loopback (the stack runner's Keycloak, Redis, MLflow, gate and NGINX,
plus the peers: a do-nothing FastAPI endpoint, oauth2-proxy, MLflow's own basic-auth app), loads
each path with wrk and writes benchmarks/RESULTS.md. It reports numbers; it asserts nothing.
"""
