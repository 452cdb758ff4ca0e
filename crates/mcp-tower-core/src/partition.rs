//! Principals and the [`Partitioner`] that derives them from a call.
//!
//! A *private* tool's results are shared only among calls of the same principal. The
//! principal comes only from an identity something verified. The default
//! [`DefaultPartitioner`] takes it from, in order:
//!
//! 1. the [`AuthenticatedName`] the HTTP edge verified (a bearer token's name: every token of
//!    one name is one principal, so rotating a token keeps the user's cache);
//! 2. a digest of a non-empty HTTP `Authorization` header (something in front of the
//!    server checked it; whoever sends the same credentials is the same caller);
//! 3. a legacy MCP session id **that rmcp's session manager validated**
//!    ([`VerifiedSession`], put there by the edge's session manager), never a bare
//!    `Mcp-Session-Id` header: rmcp does not look at that header on a stateless
//!    2026-07-28 request, so anyone could send another caller's;
//! 4. none of these on an HTTP request: [`Principal::ANONYMOUS`]. Private tools are then
//!    neither cached nor deduplicated for the call, unless the stack is configured with
//!    `anonymous = "shared"` ([`Anonymous::Shared`]: every anonymous caller is one
//!    principal);
//! 5. no HTTP request at all (stdio, or no request context): [`Principal::LOCAL`], the
//!    single client on the other end of the pipe.
//!
//! Only keyed digests are kept: a principal never holds a token or header value.

use std::fmt;

use rmcp::{RoleServer, service::RequestContext};

use crate::KeySecret;

/// An opaque caller identity: a keyed 128-bit digest, never the credential itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Principal(u128);

impl Principal {
    /// The single principal of a local (stdio) server, and of calls without a context.
    pub const LOCAL: Principal = Principal(0);

    /// A caller nobody identified (an HTTP request with no verified identity). Not a
    /// principal results may be shared in, unless the stack is configured with
    /// [`Anonymous::Shared`].
    pub const ANONYMOUS: Principal = Principal(u128::MAX);

    /// Whether this is [`Principal::ANONYMOUS`].
    pub fn is_anonymous(&self) -> bool {
        *self == Self::ANONYMOUS
    }

    /// A principal from its 128 bits (tests, custom partitioners).
    pub fn from_u128(bits: u128) -> Self {
        Self(bits)
    }

    /// A principal derived from any identifying bytes (a user id, a tenant name…), keyed
    /// by `secret` so the bytes cannot be recovered from it.
    pub fn digest_of(secret: &KeySecret, identity: &[u8]) -> Self {
        Self(secret.digest(domain::CUSTOM, identity))
    }

    /// The 128 bits of the principal.
    pub fn as_u128(&self) -> u128 {
        self.0
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::LOCAL {
            f.write_str("Principal(local)")
        } else if *self == Self::ANONYMOUS {
            f.write_str("Principal(anonymous)")
        } else {
            // Only a prefix: enough to tell principals apart in logs.
            write!(f, "Principal({:08x}…)", (self.0 >> 96) as u32)
        }
    }
}

/// The name of the caller that the HTTP edge authenticated (a bearer token's name in the
/// tokens file). The edge puts it in the HTTP request's extensions, which rmcp hands to the
/// handler inside [`http::request::Parts`]; the [`DefaultPartitioner`] makes it the
/// principal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthenticatedName(pub std::sync::Arc<str>);

/// A legacy MCP session id that rmcp's session manager knows: the request was routed to
/// that live session, so its `Mcp-Session-Id` header was not made up. The edge's session
/// manager (`mcp_tower::http::VerifiedSessions`) puts it in the extensions of the request's
/// [`http::request::Parts`]; the [`DefaultPartitioner`] makes it the principal when there
/// is no better identity. A bare `Mcp-Session-Id` header never is one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerifiedSession(pub std::sync::Arc<str>);

/// How calls without a verified identity ([`Principal::ANONYMOUS`]) use *private* tools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anonymous {
    /// Private tools are neither cached nor deduplicated for anonymous calls: each runs on
    /// its own (counted as `bypassed_anonymous` by the cache and the deduplicator). The
    /// default.
    #[default]
    Bypass,
    /// Every anonymous caller is one principal: they share private results with each other
    /// (never with an identified caller). For servers where everyone who can reach them
    /// may see everything.
    Shared,
}

mod domain {
    pub(super) const NAME: u8 = 0x13;
    pub(super) const AUTHORIZATION: u8 = 0x10;
    pub(super) const SESSION: u8 = 0x11;
    pub(super) const CUSTOM: u8 = 0x12;
}

/// Derives the [`Principal`] of a call from its request context.
///
/// Implement it to partition by something else (a tenant header, a claim of a verified
/// token). It is called at most once per call, and only for calls to private tools. Return
/// [`Principal::ANONYMOUS`] for a caller you cannot identify: never a principal that
/// unrelated callers would share.
///
/// ```
/// use mcp_tower_core::{KeySecret, Partitioner, Principal};
/// use rmcp::{RoleServer, service::RequestContext};
///
/// /// Partitions by an `X-Tenant` header.
/// #[derive(Debug)]
/// struct ByTenant(KeySecret);
///
/// impl Partitioner for ByTenant {
///     fn principal(&self, context: Option<&RequestContext<RoleServer>>) -> Principal {
///         context
///             .and_then(|cx| cx.extensions.get::<http::request::Parts>())
///             .and_then(|parts| parts.headers.get("x-tenant"))
///             .map(|tenant| Principal::digest_of(&self.0, tenant.as_bytes()))
///             .unwrap_or(Principal::ANONYMOUS)
///     }
/// }
/// ```
pub trait Partitioner: Send + Sync + fmt::Debug + 'static {
    /// The principal a call belongs to. `None` when the call has no rmcp context (unit
    /// tests, benches).
    fn principal(&self, context: Option<&RequestContext<RoleServer>>) -> Principal;
}

/// The default [`Partitioner`]: the edge's [`AuthenticatedName`], else a non-empty
/// `Authorization` header's digest, else a [`VerifiedSession`], else
/// [`Principal::ANONYMOUS`] on HTTP and [`Principal::LOCAL`] without HTTP (stdio). Every
/// credential is digested with the secret; none is kept.
#[derive(Debug, Clone, Copy)]
pub struct DefaultPartitioner {
    secret: KeySecret,
}

/// The HTTP header that carries the MCP session id.
pub const SESSION_ID_HEADER: &str = "mcp-session-id";

impl DefaultPartitioner {
    /// A partitioner digesting identities with `secret`.
    pub fn new(secret: KeySecret) -> Self {
        Self { secret }
    }

    /// The principal of an HTTP request, from its head: the [`AuthenticatedName`] the edge
    /// verified, else a non-empty `Authorization` header, else a [`VerifiedSession`], else
    /// [`Principal::ANONYMOUS`].
    pub fn principal_of_parts(&self, parts: &http::request::Parts) -> Principal {
        if let Some(AuthenticatedName(name)) = parts.extensions.get::<AuthenticatedName>() {
            return Principal(self.secret.digest(domain::NAME, name.as_bytes()));
        }
        let by_headers = self.principal_of_headers(&parts.headers);
        if !by_headers.is_anonymous() {
            return by_headers;
        }
        if let Some(VerifiedSession(id)) = parts.extensions.get::<VerifiedSession>() {
            return Principal(self.secret.digest(domain::SESSION, id.as_bytes()));
        }
        Principal::ANONYMOUS
    }

    /// The principal of an HTTP request, from its headers alone: a non-empty
    /// `Authorization` header's digest, else [`Principal::ANONYMOUS`]. (The
    /// `Mcp-Session-Id` header is not an identity: see [`VerifiedSession`].)
    pub fn principal_of_headers(&self, headers: &http::HeaderMap) -> Principal {
        match headers.get(http::header::AUTHORIZATION) {
            Some(auth) if has_credentials(auth.as_bytes()) => {
                Principal(self.secret.digest(domain::AUTHORIZATION, auth.as_bytes()))
            }
            _ => Principal::ANONYMOUS,
        }
    }
}

/// Whether an `Authorization` value carries credentials: not empty, and not a bare scheme
/// (`Bearer `), which everyone could send alike.
fn has_credentials(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    match value.iter().position(|b| *b == b' ') {
        Some(space) => !value[space..].trim_ascii().is_empty(),
        // A single word: a scheme alone when it is one of the common ones, else a raw token.
        None => {
            !value.is_empty()
                && !["bearer", "basic", "digest", "token"]
                    .iter()
                    .any(|scheme| value.eq_ignore_ascii_case(scheme.as_bytes()))
        }
    }
}

impl Default for DefaultPartitioner {
    fn default() -> Self {
        Self::new(KeySecret::process())
    }
}

impl Partitioner for DefaultPartitioner {
    fn principal(&self, context: Option<&RequestContext<RoleServer>>) -> Principal {
        context
            .and_then(|cx| cx.extensions.get::<http::request::Parts>())
            .map(|parts| self.principal_of_parts(parts))
            .unwrap_or(Principal::LOCAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> http::request::Parts {
        let mut req = http::Request::builder().uri("/mcp");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn authorization_wins_over_session_and_is_digested() {
        let p = DefaultPartitioner::new(KeySecret::random());
        let alice = p.principal_of_parts(&parts(&[
            ("authorization", "Bearer alice-token"),
            ("mcp-session-id", "s1"),
        ]));
        let alice_other_session = p.principal_of_parts(&parts(&[
            ("authorization", "Bearer alice-token"),
            ("mcp-session-id", "s2"),
        ]));
        let bob = p.principal_of_parts(&parts(&[("authorization", "Bearer bob-token")]));
        assert_eq!(alice, alice_other_session);
        assert_ne!(alice, bob);
        assert_ne!(alice, Principal::LOCAL);
        assert!(!format!("{alice:?}").contains("alice"));
    }

    #[test]
    fn an_authenticated_name_wins_and_its_tokens_share_it() {
        let p = DefaultPartitioner::new(KeySecret::random());
        let with_name = |token: &str, name: &str| {
            let mut parts = parts(&[("authorization", token)]);
            parts
                .extensions
                .insert(AuthenticatedName(std::sync::Arc::from(name)));
            p.principal_of_parts(&parts)
        };
        assert_eq!(
            with_name("Bearer old", "alice"),
            with_name("Bearer new", "alice")
        );
        assert_ne!(
            with_name("Bearer same", "alice"),
            with_name("Bearer same", "bob")
        );
        assert_ne!(
            with_name("Bearer x", "alice"),
            p.principal_of_parts(&parts(&[("authorization", "Bearer x")]))
        );
    }

    fn verified(headers: &[(&str, &str)], session: &str) -> http::request::Parts {
        let mut parts = parts(headers);
        parts
            .extensions
            .insert(VerifiedSession(std::sync::Arc::from(session)));
        parts
    }

    #[test]
    fn a_verified_session_then_anonymous_on_http_and_local_without() {
        let p = DefaultPartitioner::new(KeySecret::random());
        let s1 = p.principal_of_parts(&verified(&[("mcp-session-id", "s1")], "s1"));
        let s2 = p.principal_of_parts(&verified(&[("mcp-session-id", "s2")], "s2"));
        assert_ne!(s1, s2);
        assert!(!s1.is_anonymous() && s1 != Principal::LOCAL);
        assert_eq!(p.principal_of_parts(&parts(&[])), Principal::ANONYMOUS);
        assert_eq!(p.principal(None), Principal::LOCAL);
    }

    #[test]
    fn a_bare_session_header_is_no_identity() {
        let p = DefaultPartitioner::new(KeySecret::random());
        for header in ["s1", "someone-elses-session"] {
            assert_eq!(
                p.principal_of_parts(&parts(&[("mcp-session-id", header)])),
                Principal::ANONYMOUS
            );
        }
        // The verified id counts, not the header next to it.
        assert_eq!(
            p.principal_of_parts(&verified(&[("mcp-session-id", "forged")], "s1")),
            p.principal_of_parts(&verified(&[], "s1")),
        );
    }

    #[test]
    fn empty_or_scheme_only_authorization_is_anonymous() {
        let p = DefaultPartitioner::new(KeySecret::random());
        for value in ["", " ", "Bearer", "Bearer ", "bearer    ", "Basic "] {
            assert_eq!(
                p.principal_of_parts(&parts(&[("authorization", value)])),
                Principal::ANONYMOUS,
                "{value:?}"
            );
        }
        assert!(
            !p.principal_of_parts(&parts(&[("authorization", "Bearer t")]))
                .is_anonymous()
        );
        assert!(
            !p.principal_of_parts(&parts(&[("authorization", "raw-token")]))
                .is_anonymous()
        );
        // An empty header does not hide a verified session.
        assert!(
            !p.principal_of_parts(&verified(&[("authorization", "Bearer ")], "s1"))
                .is_anonymous()
        );
    }

    #[test]
    fn a_session_id_never_equals_the_same_string_as_a_token() {
        let p = DefaultPartitioner::new(KeySecret::random());
        let by_auth = p.principal_of_parts(&parts(&[("authorization", "x")]));
        let by_session = p.principal_of_parts(&verified(&[], "x"));
        assert_ne!(by_auth, by_session);
    }
}
