"""MLflow gate: an NGINX auth_request decision service backed by Keycloak Authorization Services."""
