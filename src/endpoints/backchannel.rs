//! `/backchannel-logout` (OIDC Back-Channel Logout 1.0): the IdP posts a signed logout
//! token; the sessions it names end on every instance that shares the store. The IdP reads
//! JSON errors, never pages.

use http::StatusCode;

use super::EndpointRequest;
use crate::authn::AuthFailure;
use crate::login::Login;
use crate::pipeline::{Answer, Judged};

const MAX_BACKCHANNEL_BODY: usize = 64 * 1024;

pub(super) async fn logout(
    judged: &Judged,
    login: &Login,
    req: &mut dyn EndpointRequest,
) -> Answer {
    let form = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return invalid_request("not_a_form");
    }
    let mut body = Vec::new();
    loop {
        match req.body_chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BACKCHANNEL_BODY {
                    return invalid_request("body_too_large");
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(()) => return invalid_request("unreadable_body"),
        }
    }
    let token = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned());
    let Some(token) = token else {
        return invalid_request("missing_logout_token");
    };
    match login.backchannel_logout(&token).await {
        Ok(_) => Answer::content(StatusCode::OK, None),
        Err(AuthFailure::Unavailable(reason)) => Answer::refused(503, reason, false),
        Err(f) => {
            tracing::warn!(request_id = %judged.request_id, reason = f.reason(), "back-channel logout token refused");
            invalid_request(f.reason())
        }
    }
}

/// The spec's error answer (a 400 with `invalid_request`).
fn invalid_request(reason: &'static str) -> Answer {
    Answer::json(
        StatusCode::BAD_REQUEST,
        &serde_json::json!({"error": "invalid_request"}),
    )
    .refusing(reason)
    .closing()
}
