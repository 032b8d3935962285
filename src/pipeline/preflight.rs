//! CORS preflights ([`crate::cors`]) are answered before authentication: browsers send them
//! without credentials (Fetch standard), and only the route's configured origins pass.

use http::StatusCode;

use super::{Answer, Front, Pipeline, Request};
use crate::config::RouteConfig;

pub(super) fn answer(
    _p: &Pipeline<'_>,
    r: &Request<'_>,
    route: &RouteConfig,
) -> Result<(), Answer> {
    // Forward-auth's proxy answers its own preflights (Envoy passes the gateway's on).
    let Some(cors) = route
        .cors
        .as_ref()
        .filter(|_| !matches!(r.facts.front, Front::ForwardAuth { .. }))
    else {
        return Ok(());
    };
    if !crate::cors::is_preflight(r.facts.method, &r.headers) {
        return Ok(());
    }
    Err(match crate::cors::preflight(cors, &r.headers) {
        Some(headers) => Answer {
            headers,
            ..Answer::content(StatusCode::NO_CONTENT, None)
        },
        None => {
            Answer::error(StatusCode::FORBIDDEN, r.judged.html).refusing("cors_preflight_refused")
        }
    })
}
