//! Who the client is: the socket peer, or whom a trusted proxy names in `X-Forwarded-For`;
//! the request id (a trusted proxy's, or a new one); and whether a browser navigates.

use super::{Front, Pipeline, Request};
use crate::forwarded;

pub(super) fn identify(p: &Pipeline<'_>, r: &mut Request<'_>) {
    let facts = r.facts;
    let judged = &mut r.judged;
    let trusted = &p.rt.config.server.trusted_proxies;
    if let Some(peer) = facts.peer {
        judged.peer_trusted = forwarded::is_trusted(peer, trusted);
        judged.client_ip = Some(forwarded::client_ip(peer, facts.headers, trusted));
    }
    judged.request_id = match facts.request_id {
        Some(id) => id.to_string(),
        None => facts
            .headers
            .get(&forwarded::X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| judged.peer_trusted && forwarded::acceptable_request_id(id))
            .map_or_else(forwarded::new_request_id, str::to_string),
    };
    // Forward-auth's answers go to a proxy, which passes a 401 or 403 on as it is; Envoy
    // passes every refusal on to the client.
    judged.html = matches!(facts.front, Front::Proxy | Front::ExtAuthz)
        && crate::respond::wants_html(facts.headers);
}
