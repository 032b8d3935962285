//! A person's path through login, as an HTTP client that keeps cookies and follows
//! redirects one hop at a time (so each hop can be checked), and fills in the real
//! provider's development login and consent forms.

use std::sync::Arc;

use reqwest::cookie::{CookieStore, Jar};
use reqwest::Url;

pub struct Browser {
    pub client: reqwest::Client,
    pub jar: Arc<Jar>,
}

#[derive(Debug)]
pub struct Page {
    pub url: String,
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> Option<String> {
        let loc = self.headers.get("location")?.to_str().ok()?;
        Url::parse(&self.url)
            .ok()?
            .join(loc)
            .ok()
            .map(|u| u.to_string())
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.body))
    }

    /// The upstream echo's headers (see `echo_handler`).
    pub fn echoed_header(&self, name: &str) -> Option<String> {
        self.json()["headers"]
            .as_array()?
            .iter()
            .find(|h| h[0] == name)
            .and_then(|h| h[1].as_str().map(str::to_string))
    }
}

/// The first HTML form: its absolute action and hidden inputs.
pub fn form(page: &Page) -> Option<(String, Vec<(String, String)>)> {
    let start = page.body.find("<form")?;
    let end = page.body[start..]
        .find("</form>")
        .map_or(page.body.len(), |e| start + e);
    let html = &page.body[start..end];
    let tag_end = html.find('>')?;
    let action = attr(&html[..tag_end], "action").unwrap_or_default();
    let action = Url::parse(&page.url).ok()?.join(&action).ok()?.to_string();
    let mut fields = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find("<input") {
        let tag = &rest[i..rest[i..].find('>').map_or(rest.len(), |e| i + e)];
        if attr(tag, "type").as_deref() == Some("hidden") {
            if let (Some(n), Some(v)) = (attr(tag, "name"), attr(tag, "value")) {
                fields.push((n, v));
            }
        }
        rest = &rest[i + 6..];
    }
    Some((action, fields))
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let i = tag.find(&key)? + key.len();
    let j = tag[i..].find('"')? + i;
    Some(tag[i..j].replace("&amp;", "&"))
}

impl Browser {
    pub fn new() -> Browser {
        Browser::with_user_agent(None)
    }

    /// A browser that sends `User-Agent: <agent>` (none with `None`).
    pub fn with_user_agent(agent: Option<&str>) -> Browser {
        let mut builder = reqwest::Client::builder();
        if let Some(agent) = agent {
            builder = builder.user_agent(agent);
        }
        Browser::built(builder)
    }

    /// A browser that also trusts the CA in `ca_pem` (a test provider served over https).
    pub fn trusting(ca_pem: &[u8]) -> Browser {
        let ca = reqwest::Certificate::from_pem(ca_pem).expect("CA PEM");
        Browser::built(reqwest::Client::builder().add_root_certificate(ca))
    }

    fn built(builder: reqwest::ClientBuilder) -> Browser {
        let jar = Arc::new(Jar::default());
        let client = builder
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(15))
            .build()
            .expect("client");
        Browser { client, jar }
    }

    /// A top-level navigation (Accept: text/html), one hop.
    pub async fn get(&self, url: &str) -> Page {
        let resp = self
            .client
            .get(url)
            .header("accept", "text/html,application/xhtml+xml")
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        Self::page(url, resp).await
    }

    /// A script's request (fetch/XHR): JSON wanted, one hop.
    pub async fn fetch(&self, url: &str) -> Page {
        let resp = self
            .client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        Self::page(url, resp).await
    }

    /// Submits a form of a page on the action's own origin (browsers send that `Origin`).
    pub async fn post_form(&self, url: &str, fields: &[(String, String)]) -> Page {
        let origin = Url::parse(url)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default();
        let resp = self
            .client
            .post(url)
            .header("accept", "text/html")
            .header("origin", origin)
            .form(fields)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        Self::page(url, resp).await
    }

    async fn page(url: &str, resp: reqwest::Response) -> Page {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        Page {
            url: url.to_string(),
            status,
            headers,
            body,
        }
    }

    /// Follows redirects from `url` (at most 20 hops); returns the last page and every URL
    /// visited.
    pub async fn follow(&self, url: &str) -> (Page, Vec<String>) {
        let mut visited = vec![url.to_string()];
        let mut page = self.get(url).await;
        for _ in 0..20 {
            match (page.status, page.location()) {
                (301 | 302 | 303 | 307 | 308, Some(next)) => {
                    visited.push(next.clone());
                    page = self.get(&next).await;
                }
                _ => return (page, visited),
            }
        }
        panic!("too many redirects: {visited:?}");
    }

    async fn submit_and_follow(&self, page: &Page, extra: &[(&str, &str)]) -> (Page, Vec<String>) {
        let (action, mut fields) =
            form(page).unwrap_or_else(|| panic!("no form on {}: {}", page.url, page.body));
        fields.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut page = self.post_form(&action, &fields).await;
        let mut visited = vec![action];
        if let Some(next) = page
            .location()
            .filter(|_| (300..400).contains(&page.status))
        {
            let (p, more) = self.follow(&next).await;
            page = p;
            visited.extend(more);
        }
        (page, visited)
    }

    /// Opens `url` and logs in as `user` at the provider's development forms (login, then
    /// consent when asked); returns the page the browser ends on and the URLs visited.
    pub async fn login(&self, url: &str, user: &str) -> (Page, Vec<String>) {
        let (mut page, mut visited) = self.follow(url).await;
        for _ in 0..4 {
            if page.body.contains("name=\"prompt\" value=\"login\"") {
                let (p, v) = self
                    .submit_and_follow(&page, &[("login", user), ("password", "any")])
                    .await;
                page = p;
                visited.extend(v);
            } else if page.body.contains("name=\"prompt\" value=\"consent\"") {
                let (p, v) = self.submit_and_follow(&page, &[]).await;
                page = p;
                visited.extend(v);
            } else {
                break;
            }
        }
        (page, visited)
    }

    /// Logs out at the gateway as a person does: opens `url` (`/_gatehouse/logout...`) and
    /// submits its confirmation form; returns the answer to that POST (one hop).
    pub async fn logout(&self, url: &str) -> Page {
        let page = self.get(url).await;
        let (action, fields) = form(&page)
            .unwrap_or_else(|| panic!("no confirmation form ({}): {}", page.status, page.body));
        self.post_form(&action, &fields).await
    }

    /// Confirms the provider's "sign out?" page.
    pub async fn confirm_logout(&self, page: &Page) -> (Page, Vec<String>) {
        self.submit_and_follow(page, &[("logout", "yes")]).await
    }

    pub fn cookie_header(&self, url: &str) -> String {
        self.jar
            .cookies(&Url::parse(url).expect("url"))
            .and_then(|v| v.to_str().ok().map(str::to_string))
            .unwrap_or_default()
    }
}
