//! Stage `identify`: who is calling. Yields the request's [`Principal`], which the later stages
//! bind sessions to (a session presented by another principal is unknown), decide policy for,
//! and audit. With `auth:` configured the bearer JWT or API key is validated
//! ([`crate::gov::Gov::principal`]: 401 with `WWW-Authenticate`, 403 `insufficient_scope`, 431);
//! without it every caller is the anonymous principal.

use h1::Request;

use crate::error::ProxyError;
use crate::hub::Worker;

/// Who a request comes from (the governance engine's principal: id, roles, scopes).
pub type Principal = governance::Principal;

/// The principal of a request.
///
/// # Errors
/// Authentication failures, rendered with their status and challenge.
pub async fn principal(w: &Worker, req: &Request) -> Result<Principal, ProxyError> {
    match w.hub.gov.get() {
        Some(g) => g.principal(req.head.headers.get("authorization")).await,
        None => Ok(Principal::anonymous()),
    }
}
