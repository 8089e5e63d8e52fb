//! `<<env.NAME>>` / `<<env.NAME:-DEFAULT>>` "anywhere" (SPEC): plain string
//! settings (addresses, paths, hosts, matchers, grant keys) are expanded
//! here, before validation; template fields keep their own placeholders.

use toml::Spanned;

use super::diag::Errors;
use super::raw::RawConfig;
use crate::template::{Context, Template};

pub(super) fn expand_plain(
    raw: &mut RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
    errs: &mut Errors,
) {
    let mut x = |s: &mut Spanned<String>| {
        if !s.get_ref().contains("<<") {
            return;
        }
        match Template::parse(s.get_ref(), Context::Header, env) {
            Ok(t) => match t.as_literal() {
                Some(v) => *s = Spanned::new(s.span(), v.to_string()),
                None => errs.at(s.span(), "only <<env.*>> placeholders are allowed here"),
            },
            Err(e) => errs.at(s.span(), e.to_string()),
        }
    };
    let p = &mut raw.proxy;
    x(&mut p.listen);
    x(&mut p.admin);
    p.deny_destinations.iter_mut().for_each(&mut x);
    p.upstream_proxy
        .iter_mut()
        .chain(p.token_proxy.iter_mut())
        .chain(p.no_upstream_proxy.iter_mut())
        .for_each(&mut x);
    if let Some(tls) = raw.tls.as_mut() {
        let tls = tls.get_mut();
        tls.ca_cert
            .iter_mut()
            .chain(tls.ca_key.iter_mut())
            .for_each(&mut x);
        tls.extra_roots.iter_mut().for_each(&mut x);
    }
    for c in raw.clients.values_mut() {
        let c = c.get_mut();
        x(&mut c.grant);
        for f in [
            &mut c.client_auth,
            &mut c.state_file,
            &mut c.authorize_url,
            &mut c.redirect_uri,
            &mut c.subject_token_type,
            &mut c.requested_token_type,
            &mut c.actor_token_type,
            &mut c.key_id,
            &mut c.signing_alg,
            &mut c.content_type,
            &mut c.token_path,
            &mut c.expires_in_path,
            &mut c.refresh_token_path,
        ] {
            f.iter_mut().for_each(&mut x);
        }
    }
    for r in raw.routes.iter_mut() {
        let r = r.get_mut();
        r.hosts.get_mut().iter_mut().for_each(&mut x);
        r.methods.iter_mut().for_each(&mut x);
        r.match_headers.values_mut().for_each(&mut x);
        r.remove_headers.iter_mut().for_each(&mut x);
        r.path_prefix
            .iter_mut()
            .chain(r.client.iter_mut())
            .chain(r.upstream.iter_mut())
            .for_each(&mut x);
    }
}
