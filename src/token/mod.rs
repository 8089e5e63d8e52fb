//! Token stage: an access token for a route's client, from a per-client
//! cache that fetches once for any number of waiters and refreshes ahead of
//! expiry. `grants/` speaks to token endpoints; `cache` decides when.

pub(crate) mod accounts;
pub(crate) mod cache;
pub(crate) mod grants;
mod jwt;
pub(crate) mod model;
pub(crate) mod per_user;
pub(crate) mod registry;
pub(crate) mod store;
pub(crate) mod tickets;

pub(crate) use cache::Slot;
pub(crate) use model::{FetchError, Token, TokenResponse};
pub(crate) use registry::{Registry, TokenSource};
