//! Microsoft Graph: a user's groups when an Entra ID token says they did not fit in it (the
//! "groups overage": `_claim_names.groups`, or `hasgroups`). Transitive membership, every
//! page followed within bounds, asked with the session's access token (which must be for
//! Graph: `GroupMember.Read.All` among the IdP's scopes).

use std::time::Duration;

use serde_json::{Map, Value};

use crate::authn::fetch;

/// Pages followed at most (999 groups each).
const MAX_PAGES: usize = 20;
/// Groups kept at most: they are sealed in the session and sent in a header.
const MAX_GROUPS: usize = 5_000;
/// The whole fetch, every page and wait included: under the refresh lock's 10 s.
pub const DEADLINE: Duration = Duration::from_secs(8);
/// The most of one page read.
const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;
/// Tries of one page when Graph says it is throttling or busy (429, 503, 504).
const TRIES: usize = 3;
/// The longest `Retry-After` waited for; longer means the login fails now.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Whether the ID token says the user's groups are elsewhere.
pub fn overage(claims: &Map<String, Value>) -> bool {
    let named = claims
        .get("_claim_names")
        .and_then(Value::as_object)
        .is_some_and(|names| names.contains_key("groups"));
    named || claims.get("hasgroups").and_then(Value::as_bool) == Some(true)
}

/// The ids of every group the user is in, directly or through other groups. The error is a
/// bounded label with the detail for the log.
pub async fn transitive_groups(
    client: &reqwest::Client,
    base: &str,
    access_token: Option<&str>,
) -> Result<Vec<String>, (&'static str, String)> {
    let token = access_token.ok_or((
        "no_access_token",
        "the token endpoint sent no access token".to_string(),
    ))?;
    let base = base.trim_end_matches('/');
    let mut next =
        format!("{base}/v1.0/me/transitiveMemberOf/microsoft.graph.group?$select=id&$top=999");
    let mut groups = Vec::new();
    for _ in 0..MAX_PAGES {
        let page = page(client, &next, token).await?;
        let values = page
            .get("value")
            .and_then(Value::as_array)
            .ok_or(("bad_answer", "a Graph page without `value`".to_string()))?;
        groups.extend(
            values
                .iter()
                .filter_map(|g| g.get("id").and_then(Value::as_str))
                .map(str::to_string),
        );
        if groups.len() > MAX_GROUPS {
            return Err(("too_many", format!("more than {MAX_GROUPS} groups")));
        }
        match page.get("@odata.nextLink").and_then(Value::as_str) {
            None => return Ok(groups),
            // The next page is Graph's too: a link elsewhere would take the token with it.
            Some(link) if same_origin(link, base) => next = link.to_string(),
            Some(_) => {
                return Err((
                    "bad_answer",
                    "a Graph nextLink to another origin".to_string(),
                ))
            }
        }
    }
    Err(("too_many", format!("more than {MAX_PAGES} pages of groups")))
}

async fn page(
    client: &reqwest::Client,
    url: &str,
    token: &str,
) -> Result<Map<String, Value>, (&'static str, String)> {
    for attempt in 1..=TRIES {
        let response = client
            .get(url)
            .bearer_auth(token)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| ("unreachable", fetch::without_url(&e)))?;
        let status = response.status();
        if matches!(status.as_u16(), 429 | 503 | 504) && attempt < TRIES {
            let wait = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(Duration::from_millis(200), Duration::from_secs);
            if wait > MAX_RETRY_AFTER {
                return Err(("throttled", format!("Graph asked to wait {wait:?}")));
            }
            tokio::time::sleep(wait).await;
            continue;
        }
        if !status.is_success() {
            return Err(("error_status", format!("Graph answered {status}")));
        }
        let body = fetch::read_capped(response, MAX_PAGE_BYTES)
            .await
            .map_err(|e| match e {
                fetch::ReadError::TooLarge(_) => {
                    ("too_large", "a Graph page too large".to_string())
                }
                fetch::ReadError::Failed(detail) => ("unreachable", detail),
            })?;
        return serde_json::from_slice(&body).map_err(|_| {
            (
                "bad_answer",
                "a Graph page that is not a JSON object".to_string(),
            )
        });
    }
    Err((
        "throttled",
        format!("Graph still throttling after {TRIES} tries"),
    ))
}

/// `link` starts with `base`'s scheme, host and port.
fn same_origin(link: &str, base: &str) -> bool {
    let origin = |u: &str| {
        url::Url::parse(u).ok().map(|u| {
            (
                u.scheme().to_string(),
                u.host_str().map(str::to_string),
                u.port_or_known_default(),
            )
        })
    };
    origin(link).is_some() && origin(link) == origin(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn overage_is_read_from_claim_names_or_hasgroups() {
        let claims = |v: Value| v.as_object().unwrap().clone();
        assert!(overage(&claims(
            json!({"_claim_names": {"groups": "src1"}, "_claim_sources": {"src1": {"endpoint": "https://graph.windows.net/x"}}})
        )));
        assert!(overage(&claims(json!({"hasgroups": true}))));
        assert!(!overage(&claims(json!({"groups": ["a"]}))));
        assert!(!overage(&claims(
            json!({"_claim_names": {"roles": "src1"}})
        )));
    }

    #[test]
    fn next_links_stay_with_graph() {
        let base = "https://graph.microsoft.com";
        assert!(same_origin(
            "https://graph.microsoft.com/v1.0/me/x?$skiptoken=1",
            base
        ));
        assert!(!same_origin("https://evil.example/v1.0/me/x", base));
        assert!(!same_origin("http://graph.microsoft.com/v1.0", base));
        assert!(!same_origin("https://graph.microsoft.com:8443/v1.0", base));
        assert!(!same_origin("not a url", base));
    }
}
