//! `/logout`: a GET only asks (a confirmation page), so that a link or an image on another
//! site cannot end sessions; a POST from the gateway's own origin (or with the page's CSRF
//! token) ends them, at the IdP too when it has an end-session endpoint.

use http::{Method, StatusCode};

use super::{query_param, EndpointRequest};
use crate::login::{cookie_value, csrf, Login};
use crate::pipeline::{Answer, Judged, Pipeline};
use crate::respond;

/// A logout form holds one token.
const MAX_LOGOUT_BODY: usize = 4 * 1024;

pub(super) async fn logout(
    p: Pipeline<'_>,
    judged: &Judged,
    login: &Login,
    req: &mut dyn EndpointRequest,
) -> Answer {
    let query = req.query();
    let everywhere = matches!(
        query_param(query, "everywhere").as_deref(),
        Some("1" | "true" | "yes")
    );
    let rd = query_param(query, "rd");
    let headers = req.headers();
    let id = cookie_value(headers, &login.cookies.session).map(str::to_string);
    if req.method() != Method::POST {
        return confirmation(p, judged, login, id.as_deref(), everywhere, rd).await;
    }
    let provenance = csrf::provenance(headers, &csrf::origin_of(&login.public_url));
    let Some(form) = read_small_form(req).await else {
        return Answer::refused(400, "bad_logout_form", judged.html);
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
        tracing::warn!(request_id = %judged.request_id, ?provenance, "logout refused: not from the gateway's own origin");
        return Answer::refused(403, "logout_cross_origin", judged.html);
    }
    let clear = login.cookies.clear_session();
    match login.logout(id.as_deref(), everywhere).await {
        Ok(Some(end_session)) => Answer::redirect(StatusCode::SEE_OTHER, &end_session, vec![clear]),
        Ok(None) => {
            if rd.is_some() {
                let target = login.return_target(rd.as_deref());
                return Answer::redirect(StatusCode::SEE_OTHER, &target, vec![clear]);
            }
            signed_out(judged, vec![("set-cookie", clear)])
        }
        Err(e) => {
            tracing::warn!(error = %e, "logout: session store unavailable");
            p.metrics.session_store_errors_total.inc();
            Answer::refused(503, "session_store_unavailable", judged.html)
        }
    }
}

/// The body of a small form; None when it is larger or unreadable.
async fn read_small_form(req: &mut dyn EndpointRequest) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        match req.body_chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_LOGOUT_BODY => {
                body.extend_from_slice(&chunk)
            }
            Ok(None) => return Some(body),
            _ => return None,
        }
    }
}

/// A GET of `/logout`: the question, as a form that POSTs back with the session's token.
async fn confirmation(
    p: Pipeline<'_>,
    judged: &Judged,
    login: &Login,
    id: Option<&str>,
    everywhere: bool,
    rd: Option<String>,
) -> Answer {
    if !judged.html {
        // Scripts log out with a POST (see docs/security.md).
        return Answer::error(StatusCode::METHOD_NOT_ALLOWED, judged.html)
            .refusing("logout_needs_post")
            .header("allow", "POST".to_string());
    }
    let found = match id {
        Some(id) => login.lookup(id).await,
        None => Ok(None),
    };
    let s = match found {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "logout: session store unavailable");
            p.metrics.session_store_errors_total.inc();
            return Answer::refused(503, "session_store_unavailable", judged.html);
        }
    };
    let (Some(s), Some(id)) = (s, id) else {
        return signed_out(judged, Vec::new());
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
        p.rt.config.server.reserved_prefix,
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
        &p.rt.config.security_headers.content_security_policy,
        &end_session,
    );
    Answer::content(
        StatusCode::OK,
        Some(("text/html; charset=utf-8", html.into_bytes())),
    )
    .header("content-security-policy", csp)
}

/// The answer once no session is left: a page for people, JSON for scripts.
fn signed_out(judged: &Judged, headers: Vec<(&'static str, String)>) -> Answer {
    let mut answer = if judged.html {
        let page = respond::html_page(
            "Signed out",
            "<h1>Signed out</h1>\n<p>Your session has ended.</p>\n<p><a href=\"/\">Sign in again</a></p>",
        );
        Answer::content(
            StatusCode::OK,
            Some(("text/html; charset=utf-8", page.into_bytes())),
        )
    } else {
        Answer::json(StatusCode::OK, &serde_json::json!({"logged_out": true}))
    };
    answer.headers = headers;
    answer
}
