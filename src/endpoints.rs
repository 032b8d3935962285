//! The gateway's own endpoints under `server.reserved_prefix` (spec §2): login, callback,
//! logout, back-channel logout, userinfo, forward-auth and the assertion JWKS; and the
//! session side of authentication (cookie → session → identity, login redirects, step-up).

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, Method, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use crate::config::RouteConfig;
use crate::identity::{AuthMethod, Identity};
use crate::gateway::Runtime;
use crate::login::{cookie_value, csrf, Login};
use crate::proxy::{GatehouseProxy, RequestCtx};
use crate::respond;

pub const ASSERTION: HeaderName = HeaderName::from_static("x-gatehouse-assertion");

/// What the session step of authentication did.
pub(crate) enum SessionOutcome {
    /// The request carries a live session that meets the route's demands.
    Authenticated(Arc<Identity>),
    /// The gateway answered (login redirect for step-up, 401, 503).
    Answered,
    /// No session here: the other methods (or the missing-credential answer) decide.
    NotApplicable,
}

const MAX_BACKCHANNEL_BODY: usize = 64 * 1024;
/// A logout form holds one token.
const MAX_LOGOUT_BODY: usize = 4 * 1024;

/// The body of a small form (a logout); None when it is larger or unreadable.
async fn read_small_form(session: &mut Session) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_LOGOUT_BODY => {
                body.extend_from_slice(&chunk)
            }
            Ok(None) => return Some(body),
            _ => return None,
        }
    }
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl GatehouseProxy {
    /// Writes a response of the gateway's own, with its usual headers.
    async fn answer(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        rt: &Runtime,
        status: StatusCode,
        headers: &[(&'static str, String)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<()> {
        self.answer_with(session, ctx, rt, status, headers, &[], body)
            .await
    }

    /// [`Self::answer`] with further headers of any name (the identity headers).
    #[allow(clippy::too_many_arguments)]
    async fn answer_with(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        rt: &Runtime,
        status: StatusCode,
        headers: &[(&'static str, String)],
        more: &[(HeaderName, String)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<()> {
        let mut resp = ResponseHeader::build(status, Some(headers.len() + more.len() + 10))?;
        let len = body.as_ref().map_or(0, |(_, b)| b.len());
        resp.insert_header("content-length", len.to_string())?;
        if let Some((content_type, _)) = &body {
            resp.insert_header("content-type", *content_type)?;
        }
        respond::gateway_page_headers(
            &mut resp,
            &rt.config.security_headers,
            ctx.tls,
            &ctx.request_id,
        )?;
        for (name, value) in headers {
            if *name == "content-security-policy" {
                // A page's own policy replaces the default one (two would both apply).
                resp.insert_header(*name, value)?;
            } else {
                resp.append_header(*name, value)?;
            }
        }
        for (name, value) in more {
            resp.append_header(name.clone(), value)?;
        }
        let head_only = session.req_header().method == Method::HEAD;
        let body = body.map(|(_, b)| b).filter(|b| !b.is_empty() && !head_only);
        session
            .write_response_header(Box::new(resp), body.is_none())
            .await?;
        if let Some(body) = body {
            session
                .write_response_body(Some(Bytes::from(body)), true)
                .await?;
        }
        Ok(())
    }

    async fn redirect(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        rt: &Runtime,
        location: &str,
        cookies: Vec<String>,
    ) -> Result<()> {
        self.redirect_with(session, ctx, rt, StatusCode::FOUND, location, cookies)
            .await
    }

    /// A redirect with another status (303 after a POST).
    async fn redirect_with(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        rt: &Runtime,
        status: StatusCode,
        location: &str,
        cookies: Vec<String>,
    ) -> Result<()> {
        let mut headers = vec![("location", location.to_string())];
        headers.extend(cookies.into_iter().map(|c| ("set-cookie", c)));
        self.answer(session, ctx, rt, status, &headers, None).await
    }

    async fn json(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        rt: &Runtime,
        status: StatusCode,
        value: serde_json::Value,
        headers: &[(&'static str, String)],
    ) -> Result<()> {
        let body = value.to_string().into_bytes();
        self.answer(
            session,
            ctx,
            rt,
            status,
            headers,
            Some(("application/json", body)),
        )
        .await
    }

    /// Dispatches `/_gatehouse/...`. True when answered; false for forward-auth, whose
    /// forwarded request then goes through the normal stages.
    pub(crate) async fn gateway_endpoint(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
    ) -> Result<bool> {
        let endpoint = ctx.reserved.clone().unwrap_or_default();
        let method = session.req_header().method.clone();
        let get = method == Method::GET || method == Method::HEAD;
        let login = rt.login.clone();
        match (endpoint.as_str(), login) {
            ("/auth", _) => return self.forward_auth_target(session, ctx, rt).await,
            ("/jwks.json", _) if get => match &rt.signer {
                Some(signer) => {
                    let body = signer.jwks().to_string().into_bytes();
                    self.answer(
                        session,
                        ctx,
                        rt,
                        StatusCode::OK,
                        &[],
                        Some(("application/jwk-set+json", body)),
                    )
                    .await?;
                }
                None => {
                    self.refuse(session, ctx, rt, 404, "no_assertion_key")
                        .await?
                }
            },
            ("/login", Some(login)) if get => self.login_endpoint(session, ctx, rt, &login).await?,
            ("/callback", Some(login)) if get => {
                self.callback_endpoint(session, ctx, rt, &login).await?
            }
            ("/logout", Some(login)) if get || method == Method::POST => {
                self.logout_endpoint(session, ctx, rt, &login).await?
            }
            ("/backchannel-logout", Some(login)) if method == Method::POST => {
                self.backchannel_endpoint(session, ctx, rt, &login).await?
            }
            ("/userinfo", Some(login)) if get => {
                let found =
                    match cookie_value(&session.req_header().headers, &login.cookies.session) {
                        Some(id) => login.lookup(id).await,
                        None => Ok(None),
                    };
                let found = found.map(|s| s.and_then(|s| Some((login.identity(&s)?, s))));
                match found {
                    Ok(Some((identity, s))) => {
                        let info = login.userinfo(&s, &identity);
                        self.json(session, ctx, rt, StatusCode::OK, info, &[])
                            .await?
                    }
                    Ok(None) => {
                        ctx.refusal = Some("no_session");
                        let challenge =
                            [("www-authenticate", "Bearer realm=\"gatehouse\"".to_string())];
                        ctx.html = false;
                        self.error_page(session, ctx, rt, StatusCode::UNAUTHORIZED, &challenge)
                            .await?
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "session store unavailable");
                        self.gateway.metrics.session_store_errors_total.inc();
                        self.refuse(session, ctx, rt, 503, "session_store_unavailable")
                            .await?
                    }
                }
            }
            (
                "/login"
                | "/callback"
                | "/logout"
                | "/backchannel-logout"
                | "/userinfo"
                | "/jwks.json",
                Some(_),
            ) => {
                self.refuse(session, ctx, rt, 405, "method_not_allowed")
                    .await?
            }
            _ => self.refuse(session, ctx, rt, 404, "reserved_path").await?,
        }
        Ok(true)
    }

    async fn refuse(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        status: u16,
        reason: &'static str,
    ) -> Result<()> {
        ctx.refusal = Some(reason);
        session.set_keepalive(None);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        self.error_page(session, ctx, rt, status, &[]).await
    }

    async fn login_endpoint(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        login: &Login,
    ) -> Result<()> {
        let query = session.req_header().uri.query().map(str::to_string);
        let rd = login.return_target(query_param(query.as_deref(), "rd").as_deref());
        let provider = match query_param(query.as_deref(), "idp") {
            Some(name) => login.provider(&name),
            None => login.providers.first(),
        };
        let Some(provider) = provider.cloned() else {
            return self.refuse(session, ctx, rt, 404, "unknown_idp").await;
        };
        let binding =
            cookie_value(&session.req_header().headers, &login.cookies.binding).map(str::to_string);
        match login.start(&provider, &rd, binding.as_deref(), None).await {
            Ok((url, cookie)) => {
                self.redirect(session, ctx, rt, &url, cookie.into_iter().collect())
                    .await
            }
            Err(f) => {
                tracing::warn!(request_id = %ctx.request_id, idp = %f.idp, reason = f.reason, detail = %f.detail, "cannot start login");
                self.refuse(session, ctx, rt, f.status, f.reason).await
            }
        }
    }

    async fn callback_endpoint(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        login: &Login,
    ) -> Result<()> {
        let query = session.req_header().uri.query().unwrap_or("").to_string();
        let headers = &session.req_header().headers;
        let binding = cookie_value(headers, &login.cookies.binding).map(str::to_string);
        let previous = cookie_value(headers, &login.cookies.session).map(str::to_string);
        let metrics = &self.gateway.metrics;
        match login.finish(&query, binding.as_deref()).await {
            Ok(done) => {
                metrics
                    .logins_total
                    .with_label_values(&[&done.idp, "success"])
                    .inc();
                if let Some(old) = previous {
                    // The browser's earlier session (if any) ends: one browser, one session.
                    let _ = login.store.delete(&old).await;
                }
                tracing::info!(
                    target: "gatehouse::audit",
                    request_id = %ctx.request_id,
                    idp = %done.idp,
                    subject = %done.subject,
                    client_ip = %ctx.client_ip.map(|i| i.to_string()).unwrap_or_default(),
                    "login"
                );
                let cookie = login.cookies.set_session(&done.session_id);
                self.redirect(session, ctx, rt, &done.return_to, vec![cookie])
                    .await
            }
            Err(f) => {
                metrics
                    .logins_total
                    .with_label_values(&[&f.idp, f.reason])
                    .inc();
                tracing::warn!(
                    target: "gatehouse::audit",
                    request_id = %ctx.request_id,
                    idp = %f.idp,
                    reason = f.reason,
                    detail = %f.detail,
                    client_ip = %ctx.client_ip.map(|i| i.to_string()).unwrap_or_default(),
                    "login failed"
                );
                self.refuse(session, ctx, rt, f.status, f.reason).await
            }
        }
    }

    /// `/logout`: a GET only asks (a confirmation page), so that a link or an image on
    /// another site cannot end sessions; a POST from the gateway's own origin ends them.
    async fn logout_endpoint(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        login: &Login,
    ) -> Result<()> {
        let req = session.req_header();
        let query = req.uri.query().map(str::to_string);
        let everywhere = matches!(
            query_param(query.as_deref(), "everywhere").as_deref(),
            Some("1" | "true" | "yes")
        );
        let rd = query_param(query.as_deref(), "rd");
        let id = cookie_value(&req.headers, &login.cookies.session).map(str::to_string);
        if req.method != Method::POST {
            return self
                .logout_confirmation(session, ctx, rt, login, id.as_deref(), everywhere, rd)
                .await;
        }
        let provenance = csrf::provenance(&req.headers, &csrf::origin_of(&login.public_url));
        let Some(form) = read_small_form(session).await else {
            return self.refuse(session, ctx, rt, 400, "bad_logout_form").await;
        };
        let allowed = match provenance {
            csrf::Provenance::SameOrigin => true,
            csrf::Provenance::CrossOrigin => false,
            csrf::Provenance::Unknown => {
                let token = url::form_urlencoded::parse(&form).find(|(k, _)| k == "csrf");
                matches!((&id, token), (Some(id), Some((_, t))) if csrf::token_matches(id, &t))
            }
        };
        if !allowed {
            tracing::warn!(request_id = %ctx.request_id, ?provenance, "logout refused: not from the gateway's own origin");
            return self
                .refuse(session, ctx, rt, 403, "logout_cross_origin")
                .await;
        }
        let clear = login.cookies.clear_session();
        match login.logout(id.as_deref(), everywhere).await {
            Ok(Some(end_session)) => {
                self.redirect_with(
                    session,
                    ctx,
                    rt,
                    StatusCode::SEE_OTHER,
                    &end_session,
                    vec![clear],
                )
                .await
            }
            Ok(None) => {
                if rd.is_some() {
                    let target = login.return_target(rd.as_deref());
                    return self
                        .redirect_with(
                            session,
                            ctx,
                            rt,
                            StatusCode::SEE_OTHER,
                            &target,
                            vec![clear],
                        )
                        .await;
                }
                self.signed_out(session, ctx, rt, vec![("set-cookie", clear)])
                    .await
            }
            Err(e) => {
                tracing::warn!(error = %e, "logout: session store unavailable");
                self.gateway.metrics.session_store_errors_total.inc();
                self.refuse(session, ctx, rt, 503, "session_store_unavailable")
                    .await
            }
        }
    }

    /// A GET of `/logout`: the question, as a form that POSTs back with the session's token.
    #[allow(clippy::too_many_arguments)]
    async fn logout_confirmation(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        login: &Login,
        id: Option<&str>,
        everywhere: bool,
        rd: Option<String>,
    ) -> Result<()> {
        if !ctx.html {
            // Scripts log out with a POST (see docs/security.md).
            ctx.refusal = Some("logout_needs_post");
            let allow = [("allow", "POST".to_string())];
            return self
                .error_page(session, ctx, rt, StatusCode::METHOD_NOT_ALLOWED, &allow)
                .await;
        }
        let found = match id {
            Some(id) => login.lookup(id).await,
            None => Ok(None),
        };
        let s = match found {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "logout: session store unavailable");
                self.gateway.metrics.session_store_errors_total.inc();
                return self
                    .refuse(session, ctx, rt, 503, "session_store_unavailable")
                    .await;
            }
        };
        let (Some(s), Some(id)) = (s, id) else {
            return self.signed_out(session, ctx, rt, Vec::new()).await;
        };
        let who = login
            .identity(&s)
            .map(|i| {
                i.username
                    .clone()
                    .or_else(|| i.email.clone())
                    .unwrap_or_else(|| i.subject.clone())
            })
            .unwrap_or_default();
        let action = {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            if everywhere {
                query.append_pair("everywhere", "1");
            }
            if let Some(rd) = &rd {
                query.append_pair("rd", rd);
            }
            query.finish()
        };
        let action = format!(
            "{}/logout{}{action}",
            rt.config.server.reserved_prefix,
            if action.is_empty() { "" } else { "?" }
        );
        let (question, button) = if everywhere {
            (
                "This ends your sessions in every browser and on every device.",
                "Sign out everywhere",
            )
        } else {
            ("This ends your session in this browser.", "Sign out")
        };
        let html = respond::html_page(
            "Sign out?",
            &format!(
                "<h1>Sign out?</h1>\n<p>You are signed in as <strong>{who}</strong>. {question}</p>\n\
                 <form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
                 <button type=\"submit\">{button}</button></form>\n<p><a href=\"/\">Stay signed in</a></p>",
                who = respond::html_escape(&who),
                action = respond::html_escape(&action),
                token = csrf::logout_token(id),
            ),
        );
        // The form's POST is answered with a redirect to the IdP's end-session endpoint, and
        // browsers apply `form-action` to that redirect too.
        let end_session = login
            .provider(s.idp())
            .and_then(|p| p.metadata())
            .and_then(|m| m.end_session_endpoint.as_deref().map(csrf::origin_of))
            .unwrap_or_default();
        let csp = respond::csp_with_form_target(
            &rt.config.security_headers.content_security_policy,
            &end_session,
        );
        self.answer(
            session,
            ctx,
            rt,
            StatusCode::OK,
            &[("content-security-policy", csp)],
            Some(("text/html; charset=utf-8", html.into_bytes())),
        )
        .await
    }

    /// The answer once no session is left: a page for people, JSON for scripts.
    async fn signed_out(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        rt: &Runtime,
        headers: Vec<(&'static str, String)>,
    ) -> Result<()> {
        if ctx.html {
            let page = respond::html_page(
                "Signed out",
                "<h1>Signed out</h1>\n<p>Your session has ended.</p>\n<p><a href=\"/\">Sign in again</a></p>",
            );
            self.answer(
                session,
                ctx,
                rt,
                StatusCode::OK,
                &headers,
                Some(("text/html; charset=utf-8", page.into_bytes())),
            )
            .await
        } else {
            let value = serde_json::json!({"logged_out": true});
            self.json(session, ctx, rt, StatusCode::OK, value, &headers)
                .await
        }
    }

    async fn backchannel_endpoint(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        login: &Login,
    ) -> Result<()> {
        ctx.html = false;
        let form = session
            .req_header()
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !form {
            return self.backchannel_error(session, ctx, rt, "not_a_form").await;
        }
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_BACKCHANNEL_BODY {
                        return self
                            .backchannel_error(session, ctx, rt, "body_too_large")
                            .await;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => {
                    return self
                        .backchannel_error(session, ctx, rt, "unreadable_body")
                        .await
                }
            }
        }
        let token = url::form_urlencoded::parse(&body)
            .find(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.into_owned());
        let Some(token) = token else {
            return self
                .backchannel_error(session, ctx, rt, "missing_logout_token")
                .await;
        };
        match login.backchannel_logout(&token).await {
            Ok(_) => {
                self.answer(session, ctx, rt, StatusCode::OK, &[], None)
                    .await
            }
            Err(crate::authn::AuthFailure::Unavailable(reason)) => {
                self.refuse(session, ctx, rt, 503, reason).await
            }
            Err(f) => {
                tracing::warn!(request_id = %ctx.request_id, reason = f.reason(), "back-channel logout token refused");
                self.backchannel_error(session, ctx, rt, f.reason()).await
            }
        }
    }

    async fn backchannel_error(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        reason: &'static str,
    ) -> Result<()> {
        ctx.refusal = Some(reason);
        session.set_keepalive(None);
        let value = serde_json::json!({"error": "invalid_request"});
        self.json(session, ctx, rt, StatusCode::BAD_REQUEST, value, &[])
            .await
    }

    /// `/_gatehouse/auth`: the request a trusted proxy asks about, from `X-Forwarded-Method`,
    /// `-Uri` and `-Host`, replaces this one for the stages that follow (route, auth,
    /// policy, rate limits). Returns true when it was refused here.
    async fn forward_auth_target(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
    ) -> Result<bool> {
        ctx.forward_auth = true;
        ctx.forward_auth_redirect = matches!(
            query_param(session.req_header().uri.query(), "redirect").as_deref(),
            Some("1" | "true")
        );
        ctx.html = false;
        if !ctx.peer_trusted {
            tracing::warn!(peer = ?ctx.peer, "forward-auth request from a peer not in server.trusted_proxies; refused");
            self.refuse(session, ctx, rt, 403, "forward_auth_untrusted")
                .await?;
            return Ok(true);
        }
        let headers = &session.req_header().headers;
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let method = text("x-forwarded-method").unwrap_or_else(|| "GET".to_string());
        let uri = text("x-forwarded-uri").unwrap_or_else(|| "/".to_string());
        let host = text("x-forwarded-host")
            .or_else(|| text("host"))
            .and_then(|h| crate::proxy::host_without_port(&h));
        let method = Some(method).filter(|m| crate::hygiene::is_canonical_method(m));
        let (Some(Ok(method)), Some(host)) = (method.map(|m| m.parse::<Method>()), host) else {
            self.refuse(session, ctx, rt, 403, "forward_auth_bad_target")
                .await?;
            return Ok(true);
        };
        let allowed = &rt.config.server.allowed_hosts;
        if !allowed.is_empty() && !allowed.contains(&host) {
            self.refuse(session, ctx, rt, 403, "host_not_allowed")
                .await?;
            return Ok(true);
        }
        let routed = match crate::proxy::route_request(rt, &host, uri.as_bytes()) {
            Ok(crate::proxy::Routed::Route(route, target)) => Some((route, target)),
            _ => None,
        };
        let Some((route, target)) = routed else {
            // Deny by default: nginx only understands 2xx, 401 and 403 here.
            self.refuse(session, ctx, rt, 403, "no_route").await?;
            return Ok(true);
        };
        let Ok(parsed) = target.to_request_target().parse::<http::Uri>() else {
            self.refuse(session, ctx, rt, 403, "forward_auth_bad_target")
                .await?;
            return Ok(true);
        };
        ctx.host = host;
        let req = session.req_header_mut();
        req.set_method(method);
        req.set_uri(parsed);
        if let Err(refusal) = crate::proxy::judge_routed_request(req, ctx, rt, route, target.path) {
            self.refuse(session, ctx, rt, 403, refusal.reason).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Forward-auth said yes: 200 with the identity headers for the proxy to pass on.
    pub(crate) async fn forward_auth_allow(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
    ) -> Result<()> {
        let mut headers: Vec<(&'static str, String)> = Vec::new();
        let mut owned: Vec<(HeaderName, String)> = Vec::new();
        if let Some(identity) = &ctx.identity {
            let mut identity_headers = http::HeaderMap::new();
            crate::proxy::set_identity_headers(
                &mut identity_headers,
                identity,
                &rt.config.headers.claims,
            );
            if let (Some(signer), Some(route)) = (&rt.signer, ctx.route(rt)) {
                if let Some(v) = signer.assertion(identity, &route.name) {
                    identity_headers.insert(ASSERTION, v);
                }
            }
            for (name, value) in identity_headers.iter() {
                if let Ok(v) = value.to_str() {
                    owned.push((name.clone(), v.to_string()));
                }
            }
        }
        if let Some((policy, state)) = ctx.rate_headers.take() {
            headers.push(("ratelimit-policy", policy));
            headers.push(("ratelimit", state));
        }
        self.answer_with(session, ctx, rt, StatusCode::OK, &headers, &owned, None)
            .await
    }

    /// The session step of authentication for a route that accepts `session`.
    pub(crate) async fn authenticate_session(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        route: &RouteConfig,
    ) -> Result<SessionOutcome> {
        if !route.auth.contains(&AuthMethod::Session) {
            return Ok(SessionOutcome::NotApplicable);
        }
        let Some(login) = &rt.login else {
            return Ok(SessionOutcome::NotApplicable);
        };
        let headers = &session.req_header().headers;
        // An explicit credential for another of the route's methods wins over a cookie.
        let other_credential = (route.auth.contains(&AuthMethod::Bearer)
            || route.auth.contains(&AuthMethod::ApiKey))
            && (headers.contains_key(http::header::AUTHORIZATION)
                || headers.contains_key("x-api-key"));
        if other_credential {
            return Ok(SessionOutcome::NotApplicable);
        }
        let Some(id) = cookie_value(headers, &login.cookies.session).map(str::to_string) else {
            return Ok(SessionOutcome::NotApplicable);
        };
        let s = match login.lookup(&id).await {
            Ok(Some(s)) => s,
            Ok(None) => return Ok(SessionOutcome::NotApplicable),
            Err(e) => {
                tracing::warn!(request_id = %ctx.request_id, error = %e, "session store unavailable");
                self.gateway.metrics.session_store_errors_total.inc();
                self.record_decision(
                    session,
                    ctx,
                    rt,
                    AuthMethod::Session,
                    "unauthenticated",
                    "session_store_unavailable",
                    None,
                );
                ctx.refusal = Some("session_store_unavailable");
                session.set_keepalive(None);
                let headers = [("retry-after", "5".to_string())];
                self.error_page(session, ctx, rt, StatusCode::SERVICE_UNAVAILABLE, &headers)
                    .await?;
                return Ok(SessionOutcome::Answered);
            }
        };
        // A session whose tokens this instance cannot read (another secret) is no session.
        let Some(identity) = login.identity(&s) else {
            return Ok(SessionOutcome::NotApplicable);
        };
        let right_idp = route
            .idp
            .and_then(|i| login.idp_config(i))
            .is_none_or(|c| c.name == s.idp());
        if !right_idp || !login.satisfies(&s, route) {
            self.record_decision(
                session,
                ctx,
                rt,
                AuthMethod::Session,
                "unauthenticated",
                "step_up_required",
                Some(s.subject()),
            );
            ctx.refusal = Some("step_up_required");
            if self.start_login_redirect(session, ctx, rt, route).await? {
                return Ok(SessionOutcome::Answered);
            }
            ctx.html = false;
            session.set_keepalive(None);
            let challenge = [(
                "www-authenticate",
                "Bearer realm=\"gatehouse\", error=\"insufficient_user_authentication\", error_description=\"A more recent or stronger login is required\"".to_string(),
            )];
            self.error_page(session, ctx, rt, StatusCode::UNAUTHORIZED, &challenge)
                .await?;
            return Ok(SessionOutcome::Answered);
        }
        ctx.session = Some(s);
        Ok(SessionOutcome::Authenticated(identity))
    }

    /// A browser navigation without a (good enough) session goes to the IdP; true when the
    /// redirect (or an error page) was sent, false for requests that get a 401 instead.
    pub(crate) async fn start_login_redirect(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        rt: &Runtime,
        route: &RouteConfig,
    ) -> Result<bool> {
        let Some(login) = rt.login.clone() else {
            return Ok(false);
        };
        let req = session.req_header();
        let navigation = (!ctx.forward_auth || ctx.forward_auth_redirect)
            && (req.method == Method::GET || req.method == Method::HEAD)
            && respond::wants_html(req);
        let provider = route.idp.and_then(|i| login.providers.get(i)).cloned();
        let (true, Some(provider)) = (navigation, provider) else {
            return Ok(false);
        };
        let rd = match req.uri.query() {
            Some(q) => format!("{}?{q}", ctx.path),
            None => ctx.path.clone(),
        };
        let rd = login.return_target(Some(&rd));
        let binding = cookie_value(&req.headers, &login.cookies.binding).map(str::to_string);
        // Each login start stores state for 10 minutes: starts count against the per-IP
        // limit of the gateway's endpoints.
        if self.reserved_limit_exceeded(session, ctx, rt).await? {
            return Ok(true);
        }
        match login
            .start(&provider, &rd, binding.as_deref(), Some(route))
            .await
        {
            Ok((url, cookie)) => {
                ctx.refusal = Some("login_redirect");
                self.redirect(session, ctx, rt, &url, cookie.into_iter().collect())
                    .await?;
            }
            Err(f) => {
                tracing::warn!(request_id = %ctx.request_id, idp = %f.idp, reason = f.reason, detail = %f.detail, "cannot start login");
                self.refuse(session, ctx, rt, f.status, f.reason).await?;
            }
        }
        Ok(true)
    }
}
