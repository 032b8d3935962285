//! The route table: host, then longest path prefix, decides which `[[route]]` serves a request.

use std::collections::HashMap;

use crate::config::RouteConfig;

/// Compiled once per config; a lookup is one hash probe and a short scan of prefixes.
#[derive(Debug, Default)]
pub struct RouteTable {
    /// Routes with a `host`, longest prefix first.
    by_host: HashMap<String, Vec<usize>>,
    /// Routes without a `host`, longest prefix first.
    any_host: Vec<usize>,
}

impl RouteTable {
    pub fn new(routes: &[RouteConfig]) -> Self {
        let mut table = RouteTable::default();
        for (i, r) in routes.iter().enumerate() {
            match &r.host {
                Some(h) => table.by_host.entry(h.clone()).or_default().push(i),
                None => table.any_host.push(i),
            }
        }
        let by_len =
            |v: &mut Vec<usize>| v.sort_by_key(|&i| std::cmp::Reverse(routes[i].path.len()));
        table.by_host.values_mut().for_each(by_len);
        by_len(&mut table.any_host);
        table
    }

    /// The index of the route for a normalized path. Routes naming the request's host win
    /// over host-less ones; among them the longest matching prefix wins.
    pub fn lookup(&self, routes: &[RouteConfig], host: &str, path: &str) -> Option<usize> {
        let first = |candidates: &[usize]| {
            candidates
                .iter()
                .copied()
                .find(|&i| prefix_matches(&routes[i].path, path))
        };
        self.by_host
            .get(host)
            .and_then(|c| first(c))
            .or_else(|| first(&self.any_host))
    }
}

/// Whole-segment prefix match: `/api` matches `/api` and `/api/x`, not `/apix`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: Option<&str>, path: &str) -> RouteConfig {
        RouteConfig {
            host: host.map(Into::into),
            ..RouteConfig::example(name, path)
        }
    }

    #[test]
    fn host_then_longest_prefix() {
        let routes = vec![
            route("root", None, "/"),
            route("api", None, "/api"),
            route("api-v2", None, "/api/v2"),
            route("app-root", Some("app.example.com"), "/"),
            route("app-static", Some("app.example.com"), "/static"),
        ];
        let t = RouteTable::new(&routes);
        let name = |host: &str, path: &str| {
            t.lookup(&routes, host, path)
                .map(|i| routes[i].name.as_str())
        };
        assert_eq!(name("x", "/"), Some("root"));
        assert_eq!(name("x", "/apix"), Some("root"));
        assert_eq!(name("x", "/api"), Some("api"));
        assert_eq!(name("x", "/api/v1/users"), Some("api"));
        assert_eq!(name("x", "/api/v2"), Some("api-v2"));
        assert_eq!(name("x", "/api/v2/a"), Some("api-v2"));
        assert_eq!(name("app.example.com", "/api/v2"), Some("app-root"));
        assert_eq!(name("app.example.com", "/static/a.css"), Some("app-static"));
    }

    #[test]
    fn no_match_without_root() {
        let routes = vec![route("api", None, "/api"), route("h", Some("h"), "/x")];
        let t = RouteTable::new(&routes);
        assert_eq!(t.lookup(&routes, "other", "/"), None);
        assert_eq!(t.lookup(&routes, "h", "/y"), None);
        assert_eq!(t.lookup(&routes, "h", "/api/1"), Some(0));
    }
}
