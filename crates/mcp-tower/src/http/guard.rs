//! Host and Origin checks for the endpoints rmcp does not serve (the admin endpoints), the
//! same rules as rmcp applies to `/mcp`.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

/// The accepted `Host` and `Origin` values.
#[derive(Debug, Clone)]
pub struct Guard {
    hosts: Arc<[String]>,
    origins: Arc<[String]>,
}

/// `host[:port]` → (host without brackets, port).
fn split_authority(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').unwrap_or((rest, ""));
        return (host, after.strip_prefix(':'));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, Some(port)),
        _ => (authority, None),
    }
}

impl Guard {
    /// A guard accepting `hosts` and `origins` (see [`crate::HttpConfig`]). Entries are
    /// lower-cased once here; a request's values are compared without allocating.
    pub fn new(hosts: Vec<String>, origins: Vec<String>) -> Self {
        let lower = |v: Vec<String>| -> Arc<[String]> {
            v.into_iter()
                .map(|e| e.trim().to_ascii_lowercase())
                .collect()
        };
        Self {
            hosts: lower(hosts),
            origins: lower(origins),
        }
    }

    /// Whether a `Host` header value is accepted: an entry equal to it, or to its host part
    /// (an entry without a port accepts any port).
    pub fn host_allowed(&self, host: &str) -> bool {
        let (name, port) = split_authority(host.trim());
        self.hosts.iter().any(|entry| {
            let (entry_name, entry_port) = split_authority(entry);
            entry_name.eq_ignore_ascii_case(name) && (entry_port.is_none() || entry_port == port)
        })
    }

    /// Whether an `Origin` header value is accepted.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let origin = origin.trim();
        if origin.eq_ignore_ascii_case("null") {
            return self.origins.iter().any(|o| o == "null");
        }
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false;
        };
        let (name, port) = split_authority(authority.trim_end_matches('/'));
        let default_port = if scheme.eq_ignore_ascii_case("https") {
            "443"
        } else {
            "80"
        };
        let port = port.unwrap_or(default_port);
        self.origins.iter().any(|entry| {
            let Some((entry_scheme, entry_authority)) = entry.split_once("://") else {
                return false;
            };
            let (entry_name, entry_port) = split_authority(entry_authority.trim_end_matches('/'));
            entry_scheme.eq_ignore_ascii_case(scheme)
                && entry_name.eq_ignore_ascii_case(name)
                && match entry_port {
                    None | Some("*") => true,
                    Some(p) => p == port,
                }
        })
    }
}

/// The middleware: 403 for a `Host` not accepted (or missing), and for a present `Origin`
/// not accepted.
pub async fn check_host_and_origin(
    State(guard): State<Guard>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if !host.is_some_and(|h| guard.host_allowed(h)) {
        return (
            StatusCode::FORBIDDEN,
            "Forbidden: Host header is not allowed\n",
        )
            .into_response();
    }
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let allowed = origin.to_str().is_ok_and(|o| guard.origin_allowed(o));
        if !allowed {
            return (StatusCode::FORBIDDEN, "Forbidden: Origin is not allowed\n").into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_origins() {
        let guard = Guard::new(
            vec![
                "localhost".into(),
                "127.0.0.1".into(),
                "::1".into(),
                "api.example:8443".into(),
            ],
            vec![
                "http://localhost:*".into(),
                "https://app.example".into(),
                "http://a.example:8080".into(),
            ],
        );
        assert!(guard.host_allowed("localhost:8080"));
        assert!(guard.host_allowed("127.0.0.1"));
        assert!(guard.host_allowed("[::1]:9"));
        assert!(guard.host_allowed("api.example:8443"));
        assert!(!guard.host_allowed("api.example:80"));
        assert!(!guard.host_allowed("evil.example"));
        assert!(!guard.host_allowed("localhost.evil.example"));

        assert!(guard.origin_allowed("http://localhost:6274"));
        assert!(guard.origin_allowed("https://app.example"));
        assert!(
            guard.origin_allowed("https://app.example:8443"),
            "no port: any port"
        );
        assert!(guard.origin_allowed("http://a.example:8080"));
        assert!(!guard.origin_allowed("http://a.example"));
        assert!(!guard.origin_allowed("http://evil.example"));
        assert!(
            !guard.origin_allowed("https://localhost:6274"),
            "scheme matters"
        );
        assert!(!guard.origin_allowed("null"));
        assert!(!guard.origin_allowed("garbage"));
        assert!(
            guard.host_allowed("LocalHost:8080"),
            "names are case-insensitive"
        );
        assert!(guard.origin_allowed("HTTP://LOCALHOST:6274"));
    }
}
