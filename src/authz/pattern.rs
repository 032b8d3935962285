//! Path patterns of policy rules: `/a` exact, `/a/*` one segment, `/a/**` any depth (also
//! none), `/users/{id}/**` with captured parameters. Matched against normalized paths.

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Star,
    DoubleStar,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segments: Vec<Segment>,
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let body = text
            .strip_prefix('/')
            .ok_or_else(|| format!("path pattern {text:?} must start with '/'"))?;
        let mut segments = Vec::new();
        let parts: Vec<&str> = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').collect()
        };
        for (i, part) in parts.iter().enumerate() {
            let seg = match *part {
                "" if i + 1 == parts.len() => continue, // a trailing slash is not a segment
                "" => return Err(format!("path pattern {text:?} has an empty segment")),
                "*" => Segment::Star,
                "**" if i + 1 == parts.len() => Segment::DoubleStar,
                "**" => return Err(format!("`**` must be the last segment of {text:?}")),
                p if p.starts_with('{') && p.ends_with('}') => {
                    let name = &p[1..p.len() - 1];
                    if name.is_empty()
                        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        return Err(format!("invalid parameter {p:?} in {text:?}"));
                    }
                    Segment::Param(name.to_string())
                }
                p if p.contains(['*', '{', '}']) => {
                    return Err(format!(
                        "segment {p:?} of {text:?} mixes text and wildcards"
                    ))
                }
                p => Segment::Literal(p.to_string()),
            };
            segments.push(seg);
        }
        Ok(Pattern { segments })
    }

    /// The literal first segment, for the rule index.
    pub fn first_literal(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Segment::Literal(l)) => Some(l),
            _ => None,
        }
    }

    /// Whether `path` matches; captured `{params}` are pushed to `params`.
    pub fn matches(&self, path: &str, params: &mut Vec<(String, String)>) -> bool {
        let body = path.trim_start_matches('/');
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut parts = if body.is_empty() {
            None
        } else {
            Some(body.split('/'))
        };
        for seg in &self.segments {
            let next = parts.as_mut().and_then(|p| p.next());
            match (seg, next) {
                (Segment::DoubleStar, _) => return true,
                (_, None) => return false,
                (Segment::Literal(l), Some(p)) if l == p => {}
                (Segment::Literal(_), Some(_)) => return false,
                (Segment::Star, Some(_)) => {}
                (Segment::Param(name), Some(p)) => params.push((name.clone(), p.to_string())),
            }
        }
        parts.as_mut().and_then(|p| p.next()).is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
        let mut params = Vec::new();
        Pattern::parse(pattern)
            .unwrap()
            .matches(path, &mut params)
            .then_some(params)
    }

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            ("/health", "/health", true),
            ("/health", "/health/", true),
            ("/health", "/healthz", false),
            ("/health", "/health/x", false),
            ("/a/*", "/a/b", true),
            ("/a/*", "/a", false),
            ("/a/*", "/a/b/c", false),
            ("/a/**", "/a", true),
            ("/a/**", "/a/", true),
            ("/a/**", "/a/b/c/d", true),
            ("/a/**", "/ab", false),
            ("/**", "/", true),
            ("/**", "/anything/at/all", true),
            ("/", "/", true),
            ("/", "/x", false),
            ("/users/{id}/**", "/users/7", true),
            ("/users/{id}/**", "/users/7/orders/1", true),
            ("/users/{id}/**", "/users", false),
            ("/a/%2F", "/a/%2F", true),
            ("/Admin", "/admin", false),
        ];
        for (pattern, path, want) in cases {
            assert_eq!(m(pattern, path).is_some(), *want, "{pattern} vs {path}");
        }
        assert_eq!(
            m("/users/{id}/orders/{order}", "/users/7/orders/9").unwrap(),
            vec![
                ("id".to_string(), "7".to_string()),
                ("order".to_string(), "9".to_string())
            ]
        );
    }

    #[test]
    fn invalid_patterns() {
        for bad in ["admin", "/a//b", "/a/**/b", "/a/{}", "/a/b*", "/a/{x-y}"] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
    }
}
