//! Stage 1b: trust. Who is calling and whether they may: the principal a
//! session is bound to (`principal`), `Origin` at the edge (`origin`), and
//! per-caller limits (`limits`).
//!
//! Every check here answers before a backend is chosen; none contacts one.

pub mod limits;
pub mod origin;
pub mod principal;

pub use limits::{Caller, CallerGuard, CallerLimits, CallerSettings, Limited};
pub use origin::Origins;
pub use principal::Bind;
