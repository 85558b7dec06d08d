//! Stage `identify`: who is calling. Yields the request's [`Principal`], which the later stages
//! bind sessions to (a session presented by another principal is unknown), decide policy for,
//! and audit. Until authentication is configured every caller is the anonymous principal.

use std::sync::Arc;

use h1::Request;

use crate::error::ProxyError;
use crate::hub::Worker;

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    id: Arc<str>,
}

impl Principal {
    /// The caller of a hub without authentication.
    pub fn anonymous() -> Self {
        Self { id: Arc::from("") }
    }

    /// The stable string sessions and store keys are bound to (`""` for anonymous).
    pub fn binding(&self) -> &str {
        &self.id
    }

    /// Whether this is the anonymous principal.
    pub fn is_anonymous(&self) -> bool {
        self.id.is_empty()
    }
}

/// The principal of a request.
///
/// # Errors
/// Never yet; authentication failures (401/403) will be returned here.
pub fn principal(_w: &Worker, _req: &Request) -> Result<Principal, ProxyError> {
    Ok(Principal::anonymous())
}
