//! Outbound HTTP to identity providers: short timeouts, a size cap, no redirects, JSON only.

use std::time::Duration;

use serde_json::Value;

const MAX_BODY: usize = 1024 * 1024;

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(3))
        // A key set or discovery document that redirects elsewhere is not trusted.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("gatehouse/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// A fetched JSON document and its `Cache-Control: max-age`, if any.
pub struct Fetched {
    pub body: Value,
    pub max_age: Option<Duration>,
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> Result<Fetched, String> {
    let resp = client
        .get(url)
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {}", without_url(&e)))?;
    read_json(resp, url).await
}

pub async fn read_json(mut resp: reqwest::Response, url: &str) -> Result<Fetched, String> {
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    let max_age = resp
        .headers()
        .get(http::header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_max_age);
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("{url}: {}", without_url(&e)))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("{url}: response larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    let body = serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))?;
    Ok(Fetched { body, max_age })
}

fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(src) = std::error::Error::source(e) {
        text = format!("{text}: {src}");
    }
    text
}

fn parse_max_age(value: &str) -> Option<Duration> {
    value.split(',').find_map(|directive| {
        let (name, v) = directive.trim().split_once('=')?;
        name.eq_ignore_ascii_case("max-age")
            .then(|| v.trim().trim_matches('"').parse::<u64>().ok())
            .flatten()
            .map(Duration::from_secs)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age() {
        assert_eq!(
            parse_max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            parse_max_age("Max-Age=\"60\""),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_max_age("no-cache"), None);
        assert_eq!(parse_max_age("max-age=abc"), None);
    }
}
