//! Authentication ([`crate::authn`], [`crate::login`]): a session cookie, a bearer token or
//! an API key, as the route lists them. A browser navigation without a (good enough)
//! session is sent to log in; anything else that is not authenticated gets a 401 with an
//! RFC 6750 challenge (a 400 for a malformed credential, a 503 when it cannot be checked).

use std::sync::Arc;

use http::{Method, StatusCode};

use super::{lockout, rate_limit, record, resource_metadata, Answer, Front, Pipeline, Request};
use crate::authn::AuthFailure;
use crate::config::RouteConfig;
use crate::identity::{AuthMethod, Identity};
use crate::login::{cookie_value, Hints};

pub(super) async fn authenticate(
    p: &Pipeline<'_>,
    r: &mut Request<'_>,
    route: &RouteConfig,
) -> Result<(), Answer> {
    // The session step lives in its own (boxed) future: routes without sessions do not
    // carry its size.
    let from_session = if route.auth.contains(&AuthMethod::Session) {
        Box::pin(session(p, r, route)).await?
    } else {
        None
    };
    let outcome = match from_session {
        Some(identity) => Ok((AuthMethod::Session, identity, false)),
        None => p.rt.auth.authenticate(&route.auth, &r.headers).await,
    };
    let (method, failure) = match outcome {
        Ok((method, identity, dpop_scheme)) => {
            if method == AuthMethod::Bearer {
                dpop(p, r, route, &identity, dpop_scheme).await?;
            }
            record::decision(
                p,
                r,
                method,
                "allow",
                "authenticated",
                Some(&identity.subject),
            );
            r.judged.identity = Some(identity);
            return Ok(());
        }
        Err(failed) => failed,
    };
    record::decision(p, r, method, "unauthenticated", failure.reason(), None);
    if matches!(failure, AuthFailure::Invalid(_) | AuthFailure::Malformed(_)) {
        lockout::count_failure(p, r);
    }
    if route.auth.contains(&AuthMethod::Session) && failure == AuthFailure::Missing {
        if let Some(answer) = Box::pin(login_redirect(p, r, route, None)).await {
            return Err(answer);
        }
    }
    // API clients get JSON, whatever their Accept header says (spec §7).
    let metadata = resource_metadata::challenge_param(p, r, route);
    let (status, challenge) = challenge(&route.auth, failure, &metadata);
    let mut answer = Answer::error(status, false)
        .refusing(failure.reason())
        .closing();
    answer.headers = challenge;
    Err(answer)
}

/// The session step: the identity of a live session that meets the route's demands; None
/// when the request has no session here (the other methods, or the missing-credential
/// answer, decide); Err when the gateway answers (the store is down, a step-up is needed).
async fn session(
    p: &Pipeline<'_>,
    r: &mut Request<'_>,
    route: &RouteConfig,
) -> Result<Option<Arc<Identity>>, Answer> {
    let Some(login) = &p.rt.login else {
        return Ok(None);
    };
    let headers = &*r.headers;
    // An explicit credential for another of the route's methods wins over a cookie.
    let other_credential = (route.auth.contains(&AuthMethod::Bearer)
        || route.auth.contains(&AuthMethod::ApiKey))
        && (headers.contains_key(http::header::AUTHORIZATION) || headers.contains_key("x-api-key"));
    if other_credential {
        return Ok(None);
    }
    let Some(id) = cookie_value(headers, &login.cookies.session) else {
        return Ok(None);
    };
    let s = match login.lookup(id).await {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::warn!(request_id = %r.judged.request_id, error = %e, "session store unavailable");
            p.metrics.session_store_errors_total.inc();
            record::decision(
                p,
                r,
                AuthMethod::Session,
                "unauthenticated",
                "session_store_unavailable",
                None,
            );
            return Err(
                Answer::error(StatusCode::SERVICE_UNAVAILABLE, r.judged.html)
                    .refusing("session_store_unavailable")
                    .closing()
                    .header("retry-after", "5".to_string()),
            );
        }
    };
    // A session whose tokens this instance cannot read (another secret) is no session.
    let Some(identity) = login.identity(&s) else {
        return Ok(None);
    };
    // A session from a provider the route does not list is no login for it.
    let right_idp = route.idps.is_empty()
        || route
            .idps
            .iter()
            .filter_map(|i| login.idp_config(*i))
            .any(|c| c.name == s.idp());
    if !right_idp || !login.satisfies(&s, route) {
        record::decision(
            p,
            r,
            AuthMethod::Session,
            "unauthenticated",
            "step_up_required",
            Some(s.subject()),
        );
        // A step-up goes back to the provider the session came from, not to the page.
        let again = right_idp.then(|| s.idp().to_string());
        if let Some(answer) = login_redirect(p, r, route, again.as_deref()).await {
            return Err(answer);
        }
        let metadata = resource_metadata::challenge_param(p, r, route);
        return Err(Answer::error(StatusCode::UNAUTHORIZED, false)
            .refusing("step_up_required")
            .closing()
            .header(
                "www-authenticate",
                format!("Bearer realm=\"gatehouse\", error=\"insufficient_user_authentication\", error_description=\"A more recent or stronger login is required\"{metadata}"),
            ));
    }
    r.judged.session = Some(s);
    Ok(Some(identity))
}

/// A browser navigation without a (good enough) session goes to the IdP: the redirect (or
/// why it cannot start); None for requests that get a 401 instead.
///
/// `again`: the provider of the session that was not good enough (step-up).
async fn login_redirect(
    p: &Pipeline<'_>,
    r: &Request<'_>,
    route: &RouteConfig,
    again: Option<&str>,
) -> Option<Answer> {
    let login = p.rt.login.as_ref()?;
    let facts = r.facts;
    let front_redirects = match facts.front {
        Front::Proxy | Front::ExtAuthz => true,
        Front::ForwardAuth { redirect } => redirect,
    };
    let navigation = front_redirects
        && (facts.method == Method::GET || facts.method == Method::HEAD)
        && crate::respond::wants_html(&r.headers);
    if !navigation || route.idps.is_empty() {
        return None;
    }
    let rd = match facts.query {
        Some(q) => format!("{}?{q}", r.judged.path),
        None => r.judged.path.clone(),
    };
    let rd = login.return_target(Some(&rd));
    let mut hints = Hints::from_query(facts.query);
    if hints.domain().is_none() {
        hints.domain_hint = route.domain_hint.clone();
    }
    let provider = match route.idps.as_slice() {
        [one] => login.providers.get(*one),
        several => again
            .and_then(|name| login.provider(name))
            .or_else(|| login.provider_for_hints(several, &hints)),
    };
    let Some(provider) = provider else {
        // Several providers and no hint naming one: the sign-in page chooses.
        return Some(chooser_redirect(p, &rd, route, &hints));
    };
    let binding = cookie_value(&r.headers, &login.cookies.binding);
    // Each login start stores state for 10 minutes: starts count against the per-IP limit
    // of the gateway's endpoints.
    if let Some(answer) = rate_limit::reserved(p, r, false).await {
        return Some(answer);
    }
    Some(
        match login
            .start(provider, &rd, binding, Some(route), &hints)
            .await
        {
            Ok((url, cookie)) => {
                Answer::redirect(StatusCode::FOUND, &url, cookie.into_iter().collect())
                    .refusing("login_redirect")
            }
            Err(f) => {
                tracing::warn!(request_id = %r.judged.request_id, idp = %f.idp, reason = f.reason, detail = %f.detail, "cannot start login");
                Answer::refused(f.status, f.reason, r.judged.html)
            }
        },
    )
}

/// To the sign-in page (`{reserved_prefix}/login` without `idp`), which lists the route's
/// providers and carries the return target and the hints.
fn chooser_redirect(p: &Pipeline<'_>, rd: &str, route: &RouteConfig, hints: &Hints) -> Answer {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("rd", rd);
    query.append_pair("route", &route.name);
    if let Some(h) = &hints.login_hint {
        query.append_pair("login_hint", h);
    }
    if let Some(h) = &hints.domain_hint {
        query.append_pair("domain_hint", h);
    }
    let location = format!(
        "{}/login?{}",
        p.rt.config.server.reserved_prefix,
        query.finish()
    );
    Answer::redirect(StatusCode::FOUND, &location, Vec::new()).refusing("login_redirect")
}

/// The status and `WWW-Authenticate` challenge of an authentication failure (RFC 6750 §3);
/// `metadata` is the route's `resource_metadata` parameter (RFC 9728 §5.1), if any.
fn challenge(
    methods: &[AuthMethod],
    failure: AuthFailure,
    metadata: &str,
) -> (StatusCode, Vec<(&'static str, String)>) {
    // Browser-session routes answer scripts with a Bearer challenge too (spec §7).
    let bearer = methods.contains(&AuthMethod::Bearer) || methods.contains(&AuthMethod::Session);
    let challenge = |error: Option<(&str, &str)>| -> Vec<(&'static str, String)> {
        let value = match (bearer, error) {
            (true, Some((code, description))) => {
                format!("Bearer realm=\"gatehouse\", error=\"{code}\", error_description=\"{description}\"{metadata}")
            }
            (true, None) => format!("Bearer realm=\"gatehouse\"{metadata}"),
            (false, _) => "ApiKey realm=\"gatehouse\"".to_string(),
        };
        vec![("www-authenticate", value)]
    };
    match failure {
        AuthFailure::Missing => (StatusCode::UNAUTHORIZED, challenge(None)),
        AuthFailure::Malformed(_) => (
            StatusCode::BAD_REQUEST,
            challenge(Some((
                "invalid_request",
                "The request carries a malformed credential",
            ))),
        ),
        AuthFailure::Invalid(_) => (
            StatusCode::UNAUTHORIZED,
            challenge(Some((
                "invalid_token",
                "The access token is invalid or expired",
            ))),
        ),
        AuthFailure::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            vec![("retry-after", "5".to_string())],
        ),
    }
}

/// RFC 9449: a token bound to a key (`cnf.jkt`) comes under the `DPoP` scheme with a proof
/// for this request, signed by that key and never seen before; an unbound token never comes
/// under `DPoP`, and a route with `require_dpop` takes bound tokens only.
async fn dpop(
    p: &Pipeline<'_>,
    r: &mut Request<'_>,
    route: &RouteConfig,
    identity: &Identity,
    dpop_scheme: bool,
) -> Result<(), Answer> {
    use crate::authn::dpop;
    let bound = dpop::bound_key(&identity.claims);
    let jkt = match (bound, dpop_scheme) {
        (None, false) if !route.require_dpop => return Ok(()),
        (None, false) => {
            return Err(dpop_refusal(
                p,
                r,
                "dpop_required",
                "invalid_token",
                "A DPoP-bound token is required",
            ))
        }
        (None, true) => {
            return Err(dpop_refusal(
                p,
                r,
                "unbound_token",
                "invalid_token",
                "The token is not bound to a key",
            ))
        }
        (Some(_), false) => {
            return Err(dpop_refusal(
                p,
                r,
                "bound_token_as_bearer",
                "invalid_token",
                "A DPoP-bound token comes under the DPoP scheme",
            ))
        }
        (Some(jkt), true) => jkt,
    };
    // The token authentication found under the DPoP scheme (for the proof's `ath`).
    let token = r
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| crate::authn::scheme_value(v.as_bytes(), "dpop"))
        .and_then(|t| std::str::from_utf8(t).ok())
        .unwrap_or_default();
    let mut proofs = r.headers.get_all("dpop").iter();
    let proof = match (proofs.next(), proofs.next()) {
        (Some(v), None) => v.to_str().unwrap_or_default(),
        (None, _) => {
            return Err(dpop_refusal(
                p,
                r,
                "missing_proof",
                "invalid_dpop_proof",
                "A DPoP proof is required",
            ))
        }
        (Some(_), Some(_)) => {
            return Err(dpop_refusal(
                p,
                r,
                "repeated_proof",
                "invalid_dpop_proof",
                "One DPoP proof per request",
            ))
        }
    };
    let leeway =
        p.rt.config
            .bearer
            .iter()
            .find(|b| identity.issuer.as_deref() == Some(b.issuer.as_str()))
            .map_or(0, |b| b.leeway.as_secs());
    let url = format!("{}{}", resource_metadata::origin(p, r), r.judged.path);
    let method = r.judged.judged_method.as_ref().unwrap_or(r.facts.method);
    let now = crate::authn::bearer::unix_now();
    let nonces = route.dpop_nonce.then_some(&*p.rt.dpop_nonces);
    let expected = dpop::Expected {
        method: method.as_str(),
        url: &url,
        token,
        jkt,
        now,
        leeway,
        nonce: nonces,
    };
    let proof = match dpop::check(proof, &expected) {
        Ok(proof) => proof,
        // §9: a new nonce to sign into the next proof.
        Err(reason @ ("nonce_required" | "stale_nonce")) => {
            let nonce = nonces.map(|n| n.issue(now)).unwrap_or_default();
            return Err(dpop_refusal(
                p,
                r,
                reason,
                "use_dpop_nonce",
                "Resource server requires nonce in DPoP proof",
            )
            .header("dpop-nonce", nonce));
        }
        Err(reason) => {
            return Err(dpop_refusal(
                p,
                r,
                reason,
                "invalid_dpop_proof",
                "The DPoP proof is not valid for this request",
            ))
        }
    };
    // One use per proof, for as long as its iat is acceptable.
    let remember = dpop::remember_for(leeway);
    let digest = crate::login::sha256_hex(&format!("{}\0{}", proof.jkt, proof.jti));
    // Remembered where every instance sees it: the session store when it is Redis, else
    // the rate limits' Redis, else this process.
    let key = format!("dpop:{digest}");
    let shared_sessions = p.rt.login.as_ref().filter(|_| {
        matches!(
            p.rt.config.session.store,
            crate::config::StoreKind::Redis(_)
        )
    });
    let fresh = if let Some(login) = shared_sessions {
        login.remember_once(&key, remember).await.map_err(drop)
    } else if let Some(shared) = p.rt.limiter.remember_once(&key, remember).await {
        shared.map_err(drop)
    } else {
        Ok(dpop::SeenProofs::here().remember_once(digest))
    };
    match fresh {
        Ok(true) => {
            p.metrics
                .dpop_proofs_total
                .with_label_values(&["valid"])
                .inc();
            Ok(())
        }
        Ok(false) => Err(dpop_refusal(
            p,
            r,
            "replayed",
            "invalid_dpop_proof",
            "The DPoP proof was used before",
        )),
        Err(_) => {
            p.metrics
                .dpop_proofs_total
                .with_label_values(&["store_unavailable"])
                .inc();
            Err(Answer::error(StatusCode::SERVICE_UNAVAILABLE, false)
                .refusing("dpop_store_unavailable")
                .closing()
                .header("retry-after", "5".to_string()))
        }
    }
}

/// A 401 with the DPoP challenge (RFC 9449 §7.1), counted and logged under `reason`.
fn dpop_refusal(
    p: &Pipeline<'_>,
    r: &mut Request<'_>,
    reason: &'static str,
    code: &str,
    description: &str,
) -> Answer {
    p.metrics
        .dpop_proofs_total
        .with_label_values(&[reason])
        .inc();
    record::decision(p, r, AuthMethod::Bearer, "unauthenticated", reason, None);
    lockout::count_failure(p, r);
    Answer::error(StatusCode::UNAUTHORIZED, false)
        .refusing(reason)
        .closing()
        .header(
            "www-authenticate",
            format!(
                "DPoP algs=\"{}\", error=\"{code}\", error_description=\"{description}\"",
                crate::authn::dpop::ALGS
            ),
        )
}
