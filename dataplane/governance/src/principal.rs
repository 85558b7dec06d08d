//! Who is calling: the [`Principal`] the `identify` stage attaches to each request.
//!
//! Produced by [`crate::identity::Authenticator`] (a validated JWT, a static API key, or the
//! anonymous principal of a loopback-only `auth: none` hub) and read by every later stage:
//! `session` binds sessions to [`Principal::binding`], `policy` derives the visibility class from
//! its roles and scopes, `audit` records [`PrincipalData::id`]. A `Principal` is an `Arc` inside, so
//! cloning one per request is a reference-count increment; it is `Send + Sync` and immutable.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// How the principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// A bearer JWT validated against the issuer's JWKS.
    Jwt,
    /// A static API key from the hub's config.
    ApiKey,
    /// No authentication (`auth: none`, loopback only).
    Anonymous,
}

impl PrincipalKind {
    /// The lowercase name used in bindings, logs and audit records.
    pub const fn as_str(self) -> &'static str {
        match self {
            PrincipalKind::Jwt => "jwt",
            PrincipalKind::ApiKey => "api_key",
            PrincipalKind::Anonymous => "anonymous",
        }
    }
}

/// The fields of a principal (reach them through [`Principal`]'s `Deref`).
#[derive(Debug, PartialEq, Eq)]
pub struct PrincipalData {
    /// Stable identifier: `jwt:<issuer>#<subject>`, `key:<name>` or `anonymous`; also the
    /// session binding ([`Principal::binding`]) and the audit `principal` field.
    pub id: Arc<str>,
    /// The token's `sub` (JWT), the key's name (API key), or `anonymous`.
    pub subject: Arc<str>,
    /// The token's `iss`; empty for API keys and the anonymous principal.
    pub issuer: Arc<str>,
    /// How the principal authenticated.
    pub kind: PrincipalKind,
    /// Roles from the configured roles claim (JWT) or the key's config, sorted, deduplicated.
    pub roles: Box<[Arc<str>]>,
    /// OAuth scopes (`scope` string and/or `scp` array), or the key's configured scopes; sorted.
    pub scopes: Box<[Arc<str>]>,
    /// When the credential stops being valid (Unix seconds); `None` for keys and anonymous.
    pub expires_at: Option<u64>,
    /// The OAuth client the token was issued to (`client_id` or `azp` claim), when present.
    pub client_id: Option<Arc<str>>,
    /// The token's `jti`, when present (for audit correlation; never used as a key).
    pub token_id: Option<Arc<str>>,
}

/// An authenticated (or anonymous) caller; cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal(Arc<PrincipalData>);

impl Deref for Principal {
    type Target = PrincipalData;
    fn deref(&self) -> &PrincipalData {
        &self.0
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("id", &self.0.id)
            .field("kind", &self.0.kind)
            .field("roles", &self.0.roles)
            .field("scopes", &self.0.scopes)
            .field("expires_at", &self.0.expires_at)
            .finish()
    }
}

fn sorted(items: impl IntoIterator<Item = impl AsRef<str>>) -> Box<[Arc<str>]> {
    let mut v: Vec<Arc<str>> = items
        .into_iter()
        .map(|s| Arc::from(s.as_ref()))
        .filter(|s: &Arc<str>| !s.is_empty())
        .collect();
    v.sort();
    v.dedup();
    v.into_boxed_slice()
}

impl Principal {
    /// A principal authenticated by a JWT.
    pub fn jwt(
        issuer: &str,
        subject: &str,
        roles: impl IntoIterator<Item = impl AsRef<str>>,
        scopes: impl IntoIterator<Item = impl AsRef<str>>,
        expires_at: Option<u64>,
    ) -> Self {
        Principal(Arc::new(PrincipalData {
            id: Arc::from(format!("jwt:{issuer}#{subject}")),
            subject: Arc::from(subject),
            issuer: Arc::from(issuer),
            kind: PrincipalKind::Jwt,
            roles: sorted(roles),
            scopes: sorted(scopes),
            expires_at,
            client_id: None,
            token_id: None,
        }))
    }

    /// A principal authenticated by the configured API key `name`.
    pub fn api_key(
        name: &str,
        roles: impl IntoIterator<Item = impl AsRef<str>>,
        scopes: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Self {
        Principal(Arc::new(PrincipalData {
            id: Arc::from(format!("key:{name}")),
            subject: Arc::from(name),
            issuer: Arc::from(""),
            kind: PrincipalKind::ApiKey,
            roles: sorted(roles),
            scopes: sorted(scopes),
            expires_at: None,
            client_id: None,
            token_id: None,
        }))
    }

    /// The anonymous principal of an `auth: none` hub (no roles, no scopes).
    pub fn anonymous() -> Self {
        Principal(Arc::new(PrincipalData {
            id: Arc::from("anonymous"),
            subject: Arc::from("anonymous"),
            issuer: Arc::from(""),
            kind: PrincipalKind::Anonymous,
            roles: Box::new([]),
            scopes: Box::new([]),
            expires_at: None,
            client_id: None,
            token_id: None,
        }))
    }

    /// The same principal with `client_id` and `token_id` set (builder for the JWT path).
    pub fn with_token_info(self, client_id: Option<&str>, token_id: Option<&str>) -> Self {
        let d = Arc::try_unwrap(self.0).unwrap_or_else(|arc| PrincipalData {
            id: arc.id.clone(),
            subject: arc.subject.clone(),
            issuer: arc.issuer.clone(),
            kind: arc.kind,
            roles: arc.roles.clone(),
            scopes: arc.scopes.clone(),
            expires_at: arc.expires_at,
            client_id: arc.client_id.clone(),
            token_id: arc.token_id.clone(),
        });
        Principal(Arc::new(PrincipalData {
            client_id: client_id.map(Arc::from),
            token_id: token_id.map(Arc::from),
            ..d
        }))
    }

    /// The stable string a session is bound to: the same person with a refreshed token keeps
    /// their sessions (issuer + subject), another person never matches. Equal to [`PrincipalData::id`].
    pub fn binding(&self) -> &str {
        &self.0.id
    }

    /// Whether the principal holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.0.roles.binary_search_by(|r| (**r).cmp(role)).is_ok()
    }

    /// Whether the principal holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.0.scopes.binary_search_by(|s| (**s).cmp(scope)).is_ok()
    }

    /// Whether the credential has expired at `now` (Unix seconds), allowing `leeway` seconds.
    pub fn is_expired(&self, now: u64, leeway: u64) -> bool {
        matches!(self.0.expires_at, Some(exp) if now > exp.saturating_add(leeway))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_and_lookups() {
        let p = Principal::jwt(
            "https://idp",
            "alice",
            ["ops", "admin", "ops"],
            ["b", "a"],
            Some(100),
        );
        assert_eq!(p.binding(), "jwt:https://idp#alice");
        assert_eq!(&*p.roles, &[Arc::from("admin"), Arc::from("ops")]);
        assert!(p.has_role("ops") && !p.has_role("op"));
        assert!(p.has_scope("a") && !p.has_scope("c"));
        assert!(!p.is_expired(100, 0) && p.is_expired(101, 0) && !p.is_expired(101, 5));
        let q = p.clone().with_token_info(Some("cli"), Some("j1"));
        assert_eq!(q.client_id.as_deref(), Some("cli"));
        assert_eq!(q.binding(), p.binding());
        assert_eq!(Principal::api_key("ci", ["x"], [""; 0]).binding(), "key:ci");
        assert_eq!(Principal::anonymous().kind, PrincipalKind::Anonymous);
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Principal>();
    }
}
