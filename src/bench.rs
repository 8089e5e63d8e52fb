//! The small API benches/ and examples/ measure sidekey through: the
//! per-request stages (route decision, header rendering, leaf minting) and
//! nothing else, so the rest of the library can stay crate-private.

pub use crate::body::empty as empty_body;
pub use crate::inbound::target;
pub use crate::rewrite::{upstream_request, upstream_uri, Head};
pub use crate::route::{RequestInfo, RouteTable};
pub use crate::secret::Secret;
pub use crate::tls::ca::{generate as generate_ca, Ca};
pub use crate::tls::LeafCache;
pub use crate::token::model::{Token, TokenResponse};
pub use crate::values::Values;

use crate::config::ValidConfig;
use crate::route::Route;

/// The route table a config's routes make, without clients' tokens: what
/// the route decision and header rendering are measured on.
pub fn route_table(cfg: ValidConfig) -> RouteTable {
    RouteTable::new(
        cfg.routes
            .into_iter()
            .map(|settings| Route::new(settings, None))
            .collect(),
    )
}
