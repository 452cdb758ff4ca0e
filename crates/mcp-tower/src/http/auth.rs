//! Bearer auth: [`Tokens`] from a `name:token` file, checked in constant time; the token's
//! name becomes the caller's [`AuthenticatedName`].

use std::{fmt, path::Path, sync::Arc};

use arc_swap::ArcSwap;
use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use mcp_tower_core::AuthenticatedName;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The tokens of a tokens file: names and SHA-256 digests of the tokens (never the tokens).
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(Arc<str>, [u8; 32])>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(n, _)| n.as_ref()).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

/// A tokens file that could not be used. The message names the file and the line, never a
/// token.
#[derive(Debug, thiserror::Error)]
#[error("tokens file {path}: {reason}")]
pub struct TokensError {
    path: String,
    reason: String,
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    /// Parses `name:token` lines (blank lines and `#` comments skipped). A name may appear on
    /// several lines (a rotation: old and new token both valid, one principal).
    pub fn parse(text: &str, path: &str) -> Result<Self, TokensError> {
        let err = |line: usize, reason: &str| TokensError {
            path: path.to_owned(),
            reason: format!("line {line}: {reason}"),
        };
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, token)) = line.split_once(':') else {
                return Err(err(n + 1, "expected `name:token`"));
            };
            let (name, token) = (name.trim(), token.trim());
            if name.is_empty() {
                return Err(err(n + 1, "the name is empty"));
            }
            if token.len() < 16 {
                return Err(err(
                    n + 1,
                    "the token is shorter than 16 characters (its value is not shown)",
                ));
            }
            entries.push((Arc::from(name), digest(token.as_bytes())));
        }
        if entries.is_empty() {
            return Err(TokensError {
                path: path.to_owned(),
                reason: "no `name:token` line: every request would be refused".into(),
            });
        }
        Ok(Self { entries })
    }

    /// Reads and parses a tokens file.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| TokensError {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, &shown)
    }

    /// The name of the token `presented`, comparing its digest with every entry's in
    /// constant time (no early exit: the time does not tell which entry matched).
    pub fn verify(&self, presented: &[u8]) -> Option<Arc<str>> {
        let presented = digest(presented);
        let mut found = None;
        for (name, expected) in &self.entries {
            if bool::from(expected.ct_eq(&presented)) {
                found = Some(Arc::clone(name));
            }
        }
        found
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Tokens that can be swapped at run time (SIGHUP), shared by the auth middleware.
#[derive(Debug, Clone)]
pub struct TokenSet {
    current: Arc<ArcSwap<Tokens>>,
    path: Option<Arc<Path>>,
}

impl TokenSet {
    /// Loads `path`.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        Ok(Self {
            current: Arc::new(ArcSwap::from_pointee(Tokens::load(path)?)),
            path: Some(Arc::from(path)),
        })
    }

    /// Fixed tokens (tests, code).
    pub fn fixed(tokens: Tokens) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(tokens)),
            path: None,
        }
    }

    /// Reads the file again; on an error the current tokens stay.
    pub fn reload(&self) -> Result<usize, TokensError> {
        let Some(path) = &self.path else {
            return Ok(self.current.load().len());
        };
        let tokens = Tokens::load(path)?;
        let n = tokens.len();
        self.current.store(Arc::new(tokens));
        Ok(n)
    }

    /// The name of a presented token.
    pub fn verify(&self, presented: &[u8]) -> Option<Arc<str>> {
        self.current.load().verify(presented)
    }
}

fn unauthorized(presented: bool) -> Response {
    let challenge = if presented {
        r#"Bearer realm="mcp", error="invalid_token""#
    } else {
        r#"Bearer realm="mcp""#
    };
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "a bearer token is required: send `Authorization: Bearer <token>`\n",
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// The auth middleware: 401 with `WWW-Authenticate` without a valid bearer token; with one,
/// the token's [`AuthenticatedName`] in the request's extensions (rmcp hands them to the
/// handler, where the default partitioner makes the name the principal).
pub async fn require_bearer(
    State(tokens): State<TokenSet>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .filter(|token| !token.is_empty());
    let Some(token) = presented else {
        return unauthorized(request.headers().contains_key(header::AUTHORIZATION));
    };
    match tokens.verify(token.as_bytes()) {
        Some(name) => {
            request.extensions_mut().insert(AuthenticatedName(name));
            next.run(request).await
        }
        None => unauthorized(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_tokens_and_errors_never_show_a_token() {
        let tokens = Tokens::parse(
            "# comment\nalice:alice-old-token-0123\n\nalice:alice-new-token-4567\nbob:bob-token-0123456789\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            tokens.verify(b"alice-old-token-0123").as_deref(),
            Some("alice")
        );
        assert_eq!(
            tokens.verify(b"alice-new-token-4567").as_deref(),
            Some("alice")
        );
        assert_eq!(
            tokens.verify(b"bob-token-0123456789").as_deref(),
            Some("bob")
        );
        assert_eq!(tokens.verify(b"nobody-token-000000"), None);
        assert_eq!(tokens.verify(b""), None);
        assert!(!format!("{tokens:?}").contains("token-"));

        let err = Tokens::parse("carol:short-secret", "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 1") && !err.contains("short-secret"),
            "{err}"
        );
        let err = Tokens::parse("no-colon-here-secret", "t")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("no-colon-here-secret"), "{err}");
        assert!(Tokens::parse("# only comments\n", "t").is_err());
    }
}
