"""Browser single sign-on: /oauth2/start, /oauth2/callback, /oauth2/sign_out, and the user badge.

Authorization Code flow with PKCE (S256), a one-time `state` bound to a cookie of this browser, and
a nonce checked in the validated ID token. The return target after sign-in is only ever a path on
this site.
"""

from __future__ import annotations

import html
import json
import logging
import secrets
import time
from urllib.parse import quote, unquote, urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from .metrics import Metrics
from .oidc import GrantRejected, OidcClient, pkce_pair
from .sessions import SIGNIN_LIFETIME_SECONDS, SessionStore, SigninState
from .settings import Settings
from .tokens import SigningKeysUnavailable, TokenError, TokenValidator
from .uma import KeycloakUnavailable

log = logging.getLogger(__name__)

SESSION_COOKIE = "mlflow_gate_session"
SIGNIN_COOKIE = "mlflow_gate_signin"
SIGNIN_PATH = "/oauth2/start"


def safe_return_target(target: str | None) -> str:
    """A same-site path to return to after sign-in, or "/" for anything that could leave the site."""
    if not target:
        return "/"
    for candidate in (target, unquote(target)):
        if (
            not candidate.startswith("/")
            or candidate.startswith("//")
            or "\\" in candidate
            or any(ord(char) < 0x20 or ord(char) == 0x7F or char.isspace() for char in candidate)
            or urlsplit(candidate).netloc
            or candidate.startswith("/oauth2/")
        ):
            return "/"
    return target


def signin_location(uri: str) -> str:
    """Where NGINX sends a browser navigation that has no session."""
    return f"{SIGNIN_PATH}?rd={quote(safe_return_target(uri), safe='')}"


class SignIn:
    def __init__(
        self,
        settings: Settings,
        oidc: OidcClient,
        sessions: SessionStore,
        tokens: TokenValidator,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._settings = settings
        self._oidc = oidc
        self._sessions = sessions
        self._tokens = tokens
        self._secure = (settings.public_url or "").startswith("https://")

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/oauth2")
        router.add_api_route("/start", self.start, methods=["GET"])
        router.add_api_route("/callback", self.callback, methods=["GET"])
        router.add_api_route("/sign_out", self.sign_out, methods=["GET", "POST"])
        router.add_api_route("/userinfo", self.userinfo, methods=["GET"])
        router.add_api_route("/badge.js", self.badge, methods=["GET"])
        return router

    async def start(self, rd: str | None = None, go: bool = False) -> Response:
        if not go:
            return _return_target_page(safe_return_target(rd))
        verifier, challenge = pkce_pair()
        nonce = secrets.token_urlsafe(32)
        state = await self._sessions.begin_signin(SigninState(verifier, nonce, safe_return_target(rd)))
        response = RedirectResponse(self._oidc.authorization_url(state, nonce, challenge), status_code=302)
        self._set_cookie(response, SIGNIN_COOKIE, state, SIGNIN_LIFETIME_SECONDS, path="/oauth2/")
        return response

    async def callback(self, request: Request) -> Response:
        params = request.query_params
        state_id = params.get("state", "")
        cookie = request.cookies.get(SIGNIN_COOKIE, "")
        if params.get("error"):
            self._metrics.signins.labels("refused_by_keycloak").inc()
            return _failure(f"Keycloak reported: {params.get('error_description') or params['error']}")
        if not state_id or not secrets.compare_digest(state_id, cookie):
            self._metrics.signins.labels("invalid_state").inc()
            return _failure("this sign-in was not started by this browser")
        signin = await self._sessions.finish_signin(state_id)
        if signin is None:
            self._metrics.signins.labels("invalid_state").inc()
            return _failure("this sign-in has expired or was already used")
        try:
            tokens = await self._oidc.exchange_code(params.get("code", ""), signin.code_verifier, time.time())
            if tokens.id_token is None:
                raise TokenError("Keycloak sent no ID token")
            await self._tokens.validate_id_token(tokens.id_token, self._settings.client_id, signin.nonce)
            identity = await self._tokens.validate(tokens.access_token)
        except (GrantRejected, TokenError) as error:
            log.warning("sign-in rejected: %s", error)
            self._metrics.signins.labels("rejected").inc()
            return _failure(f"the sign-in could not be completed ({error})")
        except (KeycloakUnavailable, SigningKeysUnavailable) as error:
            log.error("sign-in failed: %s", error)
            self._metrics.signins.labels("unavailable").inc()
            return _failure("Keycloak is not reachable right now", status=503)
        session_id = await self._sessions.create(tokens)
        response = RedirectResponse(signin.return_to, status_code=302)
        self._set_cookie(response, SESSION_COOKIE, session_id, int(self._settings.session_lifetime), path="/")
        response.delete_cookie(SIGNIN_COOKIE, path="/oauth2/")
        log.info("signed in %s", identity.username)
        self._metrics.signins.labels("ok").inc()
        return response

    async def sign_out(self, request: Request) -> Response:
        session_id = request.cookies.get(SESSION_COOKIE)
        session = await self._sessions.end(session_id) if session_id else None
        if session is not None:
            try:
                await self._oidc.end_session(session.tokens.refresh_token)
            except KeycloakUnavailable as error:
                log.error("could not end the Keycloak session: %s", error)
        response = RedirectResponse("/", status_code=302)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=self._secure, httponly=True, samesite="lax")
        return response

    async def userinfo(self, request: Request) -> Response:
        """Who the browser's session belongs to; read by the badge script in the MLflow UI."""
        session_id = request.cookies.get(SESSION_COOKIE)
        token = await self._sessions.access_token(session_id) if session_id else None
        if token is None:
            return JSONResponse({"signed_in": False}, status_code=401)
        try:
            identity = await self._tokens.validate(token)
        except (TokenError, SigningKeysUnavailable):
            return JSONResponse({"signed_in": False}, status_code=401)
        return JSONResponse(
            {"signed_in": True, "user": identity.username, "email": identity.email, "roles": sorted(identity.roles)},
            headers={"Cache-Control": "no-store"},
        )

    async def badge(self) -> Response:
        return Response(BADGE_SCRIPT, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    def _set_cookie(self, response: Response, name: str, value: str, max_age: int, path: str) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path=path, secure=self._secure, httponly=True, samesite="lax"
        )


def _return_target_page(return_to: str) -> HTMLResponse:
    """MLflow's pages are hash routes (/#/experiments/1) that never reach a server, but the browser
    keeps the fragment across NGINX's redirect to here; this page adds it to the return target."""
    target = json.dumps(return_to).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    fallback = html.escape(f"{SIGNIN_PATH}?go=1&rd={quote(return_to, safe='')}")
    body = (
        "<!doctype html><title>Signing in</title>"
        f"<script>var target = {target};"
        'if (target.indexOf("#") < 0) { target += location.hash; }'
        f'location.replace("{SIGNIN_PATH}?go=1&rd=" + encodeURIComponent(target));</script>'
        f'<noscript><a href="{fallback}">Sign in</a></noscript>'
    )
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


def _failure(message: str, status: int = 400) -> HTMLResponse:
    body = (
        "<!doctype html><title>Sign-in failed</title>"
        f"<p>Sign-in failed: {html.escape(message)}.</p>"
        f'<p><a href="{SIGNIN_PATH}">Sign in again</a></p>'
    )
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


# Injected into the MLflow UI by NGINX. It builds the badge with textContent only, so a user name
# can never become markup.
BADGE_SCRIPT = """(function () {
  fetch("/oauth2/userinfo", {credentials: "same-origin"})
    .then(function (r) { return r.ok ? r.json() : null; })
    .then(function (info) {
      if (!info || !info.signed_in) { return; }
      var box = document.createElement("div");
      box.id = "mlflow-gate-user";
      box.style.cssText = "position:fixed;bottom:8px;right:12px;z-index:2147483647;padding:4px 10px;" +
        "font:13px sans-serif;background:#fff;border:1px solid #ccc;border-radius:4px;";
      var who = document.createElement("span");
      who.textContent = "Signed in as " + info.user + " (" + (info.roles.filter(function (r) {
        return r === "Admin" || r === "Default"; }).join(", ") || "no role") + ") ";
      var out = document.createElement("a");
      out.href = "/oauth2/sign_out";
      out.id = "mlflow-gate-sign-out";
      out.textContent = "Sign out";
      box.appendChild(who);
      box.appendChild(out);
      document.body.appendChild(box);
    });
})();
"""
