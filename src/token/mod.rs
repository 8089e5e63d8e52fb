//! Token stage: an access token for a route's client, from a per-client
//! cache that fetches once for any number of waiters and refreshes ahead of
//! expiry. `grants/` speaks to token endpoints; `cache` decides when.

pub mod accounts;
pub mod cache;
pub mod grants;
mod jwt;
mod model;
pub mod per_user;
pub mod shared;
pub mod store;

pub use cache::Slot;
pub use model::{FetchError, Token, TokenResponse, MAX_LIFETIME};
pub use per_user::PerUser;
pub use store::{TokenSource, TokenStore};
