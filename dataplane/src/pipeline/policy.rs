//! Stage `policy`: whether this principal may send this message (tool visibility and
//! permission, argument checks, rate and loop limits, approvals). Until policies are configured
//! everything is allowed; the stage is here so that the decision has one place on the path,
//! after the session is known and before anything is routed upstream.

use super::{Call, Ctx};
use crate::error::ProxyError;
use crate::hub::Worker;

/// Decides whether `call` may proceed.
///
/// # Errors
/// A denial, rendered as the client-facing error (none yet: everything is allowed).
pub fn check(_w: &Worker, _cx: &Ctx<'_>, _call: &Call<'_>) -> Result<(), ProxyError> {
    Ok(())
}
