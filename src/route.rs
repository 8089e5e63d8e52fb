//! Route stage: which route (if any) a request belongs to. Routes are
//! compiled once into a map of exact hosts and a map of wildcard suffixes,
//! so a request costs a few hash lookups, not a scan of every route.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, Method};

use crate::config::{HostPattern, RouteSettings};
use crate::credential::Credential;
use crate::error::ProxyError;
use crate::token::Token;
use crate::values::{ValueCache, Values};

/// A route, where its client's tokens come from, and its template values
/// for the client's current token.
pub struct Route {
    pub settings: RouteSettings,
    pub credential: Option<Credential>,
    values: ValueCache,
}

impl Route {
    pub fn new(settings: RouteSettings, credential: Option<Credential>) -> Self {
        Self {
            settings,
            credential,
            values: ValueCache::default(),
        }
    }

    /// The values of this route's templates for `token`: kept for the
    /// token last seen, so they are rendered once per token. A user's
    /// token (`per_user`) is rendered for its request only, so the route
    /// never holds one user's token while serving another.
    pub fn values(
        &self,
        token: Option<&Arc<Token>>,
        per_user: bool,
    ) -> Result<Arc<Values>, ProxyError> {
        if per_user {
            Values::render(&self.settings, token).map(Arc::new)
        } else {
            self.values.get(&self.settings, token)
        }
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }
}

/// What the route stage looks at.
pub struct RequestInfo<'a> {
    pub host: &'a str,
    pub port: u16,
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

/// The route that matched, and why.
pub struct Decision<'a> {
    pub route: &'a Route,
    pub pattern: &'a HostPattern,
}

impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, host, port) = match self.pattern {
            HostPattern::Exact { host, port } => ("host", host.as_str(), port),
            HostPattern::Wildcard { suffix, port } => ("host matched *", suffix.as_str(), port),
        };
        write!(f, "route {:?}: {kind}{host}", self.route.name())?;
        if let Some(p) = port {
            write!(f, ":{p}")?;
        }
        if let Some(p) = &self.route.settings.path_prefix {
            write!(f, ", path under {p}")?;
        }
        Ok(())
    }
}

#[derive(Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// host -> (route index, pattern index), in file order.
    exact: HashMap<String, Vec<(usize, usize)>>,
    /// ".example.com" -> (route index, pattern index), in file order.
    wildcard: HashMap<String, Vec<(usize, usize)>>,
}

impl RouteTable {
    pub fn new(routes: Vec<Route>) -> Self {
        let mut exact: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<(usize, usize)>> = HashMap::new();
        for (ri, r) in routes.iter().enumerate() {
            for (pi, p) in r.settings.hosts.iter().enumerate() {
                match p {
                    HostPattern::Exact { host, .. } => {
                        exact.entry(host.clone()).or_default().push((ri, pi))
                    }
                    HostPattern::Wildcard { suffix, .. } => {
                        wildcard.entry(suffix.clone()).or_default().push((ri, pi))
                    }
                }
            }
        }
        Self {
            routes,
            exact,
            wildcard,
        }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The first route in file order that matches; `host` must be lower-case.
    pub fn decide(&self, req: &RequestInfo<'_>) -> Option<Decision<'_>> {
        let mut best: Option<(usize, usize)> = None;
        let mut consider = |list: Option<&Vec<(usize, usize)>>| {
            // Each list is in file order: its first full match is its best.
            let found = list
                .into_iter()
                .flatten()
                .take_while(|(ri, _)| best.is_none_or(|(b, _)| *ri < b))
                .find(|(ri, pi)| self.matches(*ri, *pi, req));
            if let Some(&(ri, pi)) = found {
                best = Some((ri, pi));
            }
        };
        consider(self.exact.get(req.host));
        // Every suffix that starts at a dot: a.b.example.com -> .b.example.com, .example.com, .com
        if req.host.parse::<std::net::IpAddr>().is_err() {
            for (i, _) in req.host.match_indices('.') {
                if i > 0 {
                    consider(self.wildcard.get(&req.host[i..]));
                }
            }
        }
        best.map(|(ri, pi)| Decision {
            route: &self.routes[ri],
            pattern: &self.routes[ri].settings.hosts[pi],
        })
    }

    /// Whether some route names `host` (and `port`): for CONNECT, whose
    /// path, method and headers are only known inside the tunnel.
    pub fn names_host(&self, host: &str, port: u16) -> bool {
        let port_ok = |&(ri, pi): &(usize, usize)| {
            let p = match &self.routes[ri].settings.hosts[pi] {
                HostPattern::Exact { port, .. } | HostPattern::Wildcard { port, .. } => *port,
            };
            p.is_none_or(|p| p == port)
        };
        let in_list = |l: Option<&Vec<(usize, usize)>>| l.is_some_and(|l| l.iter().any(port_ok));
        in_list(self.exact.get(host))
            || (host.parse::<std::net::IpAddr>().is_err()
                && host
                    .match_indices('.')
                    .any(|(i, _)| i > 0 && in_list(self.wildcard.get(&host[i..]))))
    }

    fn matches(&self, ri: usize, pi: usize, req: &RequestInfo<'_>) -> bool {
        let s = &self.routes[ri].settings;
        let port = match &s.hosts[pi] {
            HostPattern::Exact { port, .. } | HostPattern::Wildcard { port, .. } => *port,
        };
        port.is_none_or(|p| p == req.port)
            && s.path_prefix
                .as_deref()
                .is_none_or(|p| req.path.starts_with(p))
            && (s.methods.is_empty() || s.methods.contains(req.method))
            && s.match_headers
                .iter()
                .all(|(k, v)| req.headers.get_all(k).iter().any(|have| have == v))
    }
}

#[cfg(test)]
mod tests;
