//! Principals and the [`Partitioner`] that derives them from a call.
//!
//! A *private* tool's results are shared only among calls of the same principal. The
//! default [`DefaultPartitioner`] takes the principal from, in order:
//!
//! 0. the [`AuthenticatedName`] the HTTP edge verified (a bearer token's name: every token of
//!    one name is one principal, so rotating a token keeps the user's cache);
//! 1. a digest of the HTTP `Authorization` header (rmcp's streamable HTTP server puts the
//!    request's [`http::request::Parts`] in the request context's extensions);
//! 2. else the MCP session id (the `Mcp-Session-Id` header);
//! 3. else one local principal (stdio: the single client on the other end of the pipe).
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

mod domain {
    pub(super) const NAME: u8 = 0x13;
    pub(super) const AUTHORIZATION: u8 = 0x10;
    pub(super) const SESSION: u8 = 0x11;
    pub(super) const CUSTOM: u8 = 0x12;
}

/// Derives the [`Principal`] of a call from its request context.
///
/// Implement it to partition by something else (a tenant header, a claim of a verified
/// token). It is called at most once per call, and only for calls to private tools.
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
///             .unwrap_or(Principal::LOCAL)
///     }
/// }
/// ```
pub trait Partitioner: Send + Sync + fmt::Debug + 'static {
    /// The principal a call belongs to. `None` when the call has no rmcp context (unit
    /// tests, benches).
    fn principal(&self, context: Option<&RequestContext<RoleServer>>) -> Principal;
}

/// The default [`Partitioner`]: `Authorization` header digest, else MCP session id,
/// else the local principal.
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
    /// verified, else its headers.
    pub fn principal_of_parts(&self, parts: &http::request::Parts) -> Principal {
        if let Some(AuthenticatedName(name)) = parts.extensions.get::<AuthenticatedName>() {
            return Principal(self.secret.digest(domain::NAME, name.as_bytes()));
        }
        self.principal_of_headers(&parts.headers)
    }

    /// The principal of an HTTP request, from its headers.
    pub fn principal_of_headers(&self, headers: &http::HeaderMap) -> Principal {
        if let Some(auth) = headers.get(http::header::AUTHORIZATION) {
            return Principal(self.secret.digest(domain::AUTHORIZATION, auth.as_bytes()));
        }
        if let Some(session) = headers.get(SESSION_ID_HEADER) {
            return Principal(self.secret.digest(domain::SESSION, session.as_bytes()));
        }
        Principal::LOCAL
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

    #[test]
    fn session_id_then_local() {
        let p = DefaultPartitioner::new(KeySecret::random());
        let s1 = p.principal_of_parts(&parts(&[("mcp-session-id", "s1")]));
        let s2 = p.principal_of_parts(&parts(&[("mcp-session-id", "s2")]));
        assert_ne!(s1, s2);
        assert_eq!(p.principal_of_parts(&parts(&[])), Principal::LOCAL);
        assert_eq!(p.principal(None), Principal::LOCAL);
    }

    #[test]
    fn a_session_id_never_equals_the_same_string_as_a_token() {
        let p = DefaultPartitioner::new(KeySecret::random());
        let by_auth = p.principal_of_parts(&parts(&[("authorization", "x")]));
        let by_session = p.principal_of_parts(&parts(&[("mcp-session-id", "x")]));
        assert_ne!(by_auth, by_session);
    }
}
