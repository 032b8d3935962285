//! `/userinfo`: what a single-page app may know about its user (the session's identity), as
//! JSON; a 401 without a session.

use http::StatusCode;

use super::EndpointRequest;
use crate::login::{cookie_value, Login};
use crate::pipeline::{Answer, Judged, Pipeline};

pub(super) async fn userinfo(
    p: Pipeline<'_>,
    judged: &Judged,
    login: &Login,
    req: &mut dyn EndpointRequest,
) -> Answer {
    let id = cookie_value(req.headers(), &login.cookies.session).map(str::to_string);
    let found = match id {
        Some(id) => login.lookup(&id).await,
        None => Ok(None),
    };
    match found.map(|s| s.and_then(|s| Some((login.identity(&s)?, s)))) {
        Ok(Some((identity, s))) => Answer::json(StatusCode::OK, &login.userinfo(&s, &identity)),
        Ok(None) => Answer::error(StatusCode::UNAUTHORIZED, false)
            .refusing("no_session")
            .header("www-authenticate", "Bearer realm=\"gatehouse\"".to_string()),
        Err(e) => {
            tracing::warn!(error = %e, "session store unavailable");
            p.metrics.session_store_errors_total.inc();
            Answer::refused(503, "session_store_unavailable", judged.html)
        }
    }
}
