//! `/login` starts a browser login at an IdP; `/callback` is where the IdP sends the
//! browser back (the OIDC redirect URI). The flow itself is [`crate::login`]'s.

use http::StatusCode;

use super::{query_param, EndpointRequest};
use crate::login::{cookie_value, Login};
use crate::pipeline::{Answer, Judged, Pipeline};
use crate::session::LoginClient;

/// `/login?rd=<return target>&idp=<name>`: the redirect to the IdP.
pub(super) async fn start(
    _p: Pipeline<'_>,
    judged: &Judged,
    login: &Login,
    req: &mut dyn EndpointRequest,
) -> Answer {
    let query = req.query();
    let rd = login.return_target(query_param(query, "rd").as_deref());
    let provider = match query_param(query, "idp") {
        Some(name) => login.provider(&name),
        None => login.providers.first(),
    };
    let Some(provider) = provider.cloned() else {
        return Answer::refused(404, "unknown_idp", judged.html);
    };
    let binding = cookie_value(req.headers(), &login.cookies.binding).map(str::to_string);
    match login.start(&provider, &rd, binding.as_deref(), None).await {
        Ok((url, cookie)) => {
            Answer::redirect(StatusCode::FOUND, &url, cookie.into_iter().collect())
        }
        Err(f) => {
            tracing::warn!(request_id = %judged.request_id, idp = %f.idp, reason = f.reason, detail = %f.detail, "cannot start login");
            Answer::refused(f.status, f.reason, judged.html)
        }
    }
}

/// `/callback`: the login finishes, the browser gets its (new) session cookie and goes back
/// where it started.
pub(super) async fn callback(
    p: Pipeline<'_>,
    judged: &Judged,
    login: &Login,
    req: &mut dyn EndpointRequest,
) -> Answer {
    let query = req.query().unwrap_or("").to_string();
    let headers = req.headers();
    let binding = cookie_value(headers, &login.cookies.binding).map(str::to_string);
    let previous = cookie_value(headers, &login.cookies.session).map(str::to_string);
    let client_ip = judged.client_ip.map(|i| i.to_string()).unwrap_or_default();
    // Where the login came from, kept only for the session admin API: personal data (and
    // 20-odd bytes a session) that a gateway without the API has no reader for.
    let client = match p.rt.config.admin.token {
        Some(_) => LoginClient::new(
            judged.client_ip,
            headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        ),
        None => LoginClient::default(),
    };
    let metrics = p.metrics;
    match login.finish(&query, binding.as_deref(), &client).await {
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
                request_id = %judged.request_id,
                idp = %done.idp,
                subject = %done.subject,
                client_ip = %client_ip,
                "login"
            );
            let cookie = login.cookies.set_session(&done.session_id);
            Answer::redirect(StatusCode::FOUND, &done.return_to, vec![cookie])
        }
        Err(f) => {
            metrics
                .logins_total
                .with_label_values(&[&f.idp, f.reason])
                .inc();
            tracing::warn!(
                target: "gatehouse::audit",
                request_id = %judged.request_id,
                idp = %f.idp,
                reason = f.reason,
                detail = %f.detail,
                client_ip = %client_ip,
                "login failed"
            );
            Answer::refused(f.status, f.reason, judged.html)
        }
    }
}
