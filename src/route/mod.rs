//! Stage 3: route. Which pool a request that begins something goes to.
//!
//! Routes are tried in order; the first whose match fields all hold picks
//! the pool. Fields: `path_prefix` (the path begins with it), `host` (the
//! request's host, `*.` for any subdomain), `method` (`Mcp-Method`) and `name`
//! (`Mcp-Name`, exact or a `*` glob). Header values are matched after the
//! `=?base64?...?=` decoding the 2026-07-28 revision defines (`mcp::header`).
//!
//! A request in a session never comes here: it follows its token to its
//! owner, whatever pool that is in. This stage never reads a body and never
//! picks a backend.

use prometheus_client::metrics::counter::Counter;

use crate::config::{RouteConfig, SoftKey};
use crate::http1::head::Fields;
use crate::metrics::{self, Metrics};

/// What a request shows for routing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Input<'a> {
    /// The path, without the query.
    pub path: &'a [u8],
    /// `Host` (or the absolute-form authority), as sent.
    pub host: Option<&'a [u8]>,
    /// `Mcp-Method`, decoded.
    pub method: Option<&'a [u8]>,
    /// `Mcp-Name`, decoded.
    pub name: Option<&'a [u8]>,
}

/// One route, compiled.
#[derive(Debug)]
pub struct Route {
    path_prefix: Option<Box<[u8]>>,
    host: Option<Box<[u8]>>,
    method: Option<Box<[u8]>>,
    name: Option<Box<[u8]>>,
    /// Index of its pool in the pool list it was compiled against.
    pub pool: usize,
    /// Check the `Mcp-*` headers against the body.
    pub validate: bool,
    /// The route matches on `Mcp-Method` or `Mcp-Name`.
    pub by_header: bool,
    /// Soft affinity: what is hashed, and the load factor.
    pub soft: Option<(SoftKey, f64)>,
    /// Cookie stickiness: the cookie's name.
    pub cookie: Option<Box<str>>,
    /// `tether_route_requests_total{route, pool}`, resolved once.
    pub requests: Counter,
}

/// The ordered routes.
#[derive(Debug, Default)]
pub struct Routes {
    list: Vec<Route>,
}

impl Routes {
    /// Compiles `config` against `pools` (the names, by index); a route
    /// whose pool is not there is skipped (config validation rules it out).
    pub fn new(config: &[RouteConfig], pools: &[&str], metrics: &Metrics) -> Routes {
        let bytes = |v: &Option<String>| v.as_ref().map(|v| v.as_bytes().into());
        let list = config
            .iter()
            .enumerate()
            .filter_map(|(index, r)| {
                let pool = pools.iter().position(|p| *p == r.pool)?;
                let requests = metrics
                    .route_requests
                    .get_or_create(&metrics::RoutePool {
                        route: index.to_string(),
                        pool: r.pool.clone(),
                    })
                    .clone();
                Some(Route {
                    path_prefix: bytes(&r.path_prefix),
                    host: bytes(&r.host),
                    method: bytes(&r.method),
                    name: bytes(&r.name),
                    pool,
                    validate: r.validate,
                    by_header: r.method.is_some() || r.name.is_some(),
                    soft: r
                        .soft_affinity
                        .clone()
                        .map(|k| (k, r.load_factor.unwrap_or(1.25))),
                    cookie: r.sticky_cookie.as_deref().map(Into::into),
                    requests,
                })
            })
            .collect();
        Routes { list }
    }

    /// The first route `input` matches.
    pub fn choose(&self, input: &Input<'_>) -> Option<&Route> {
        self.list.iter().find(|r| r.matches(input))
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl Route {
    fn matches(&self, input: &Input<'_>) -> bool {
        if let Some(prefix) = &self.path_prefix {
            if !input.path.starts_with(prefix) {
                return false;
            }
        }
        if let Some(host) = &self.host {
            match input.host {
                Some(h) if host_matches(host, h) => {}
                _ => return false,
            }
        }
        if let Some(method) = &self.method {
            if input.method != Some(&**method) {
                return false;
            }
        }
        if let Some(name) = &self.name {
            match input.name {
                Some(n) if glob(name, n) => {}
                _ => return false,
            }
        }
        true
    }
}

impl Route {
    /// The soft-affinity key of a request, if the route hashes one and the
    /// request carries it.
    pub fn soft_key<'a>(&self, buf: &'a [u8], fields: &Fields) -> Option<&'a [u8]> {
        match &self.soft.as_ref()?.0 {
            SoftKey::Header(name) => header(buf, fields, name.as_bytes()),
            SoftKey::Authorization => header(buf, fields, b"authorization"),
            SoftKey::Cookie(name) => cookie(buf, fields, name.as_bytes()),
        }
    }
}

/// The first value of the field `name` (lowercase), trimmed, if not empty.
fn header<'a>(buf: &'a [u8], fields: &Fields, name: &[u8]) -> Option<&'a [u8]> {
    fields
        .list
        .iter()
        .find(|f| buf[f.name.clone()].eq_ignore_ascii_case(name))
        .map(|f| buf[f.value.clone()].trim_ascii())
        .filter(|v| !v.is_empty())
}

/// The value of cookie `name` in the request's `Cookie` fields (RFC 6265
/// §5.4: `name=value` pairs separated by `;`), the first if it is repeated.
pub fn cookie<'a>(buf: &'a [u8], fields: &Fields, name: &[u8]) -> Option<&'a [u8]> {
    fields
        .list
        .iter()
        .filter(|f| buf[f.name.clone()].eq_ignore_ascii_case(b"cookie"))
        .flat_map(|f| buf[f.value.clone()].split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let at = pair.iter().position(|&b| b == b'=')?;
            (pair[..at].trim_ascii() == name).then(|| pair[at + 1..].trim_ascii())
        })
        .map(|v| {
            v.strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v)
        })
        .filter(|v| !v.is_empty())
}

/// Whether `pattern` (lowercase; a leading `*.` matches one or more labels)
/// matches the request's host, compared without case and, when the pattern
/// names no port, without the port.
fn host_matches(pattern: &[u8], host: &[u8]) -> bool {
    let has_port = strip_port(pattern).len() != pattern.len();
    let host = match has_port {
        true => host,
        false => strip_port(host),
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    match pattern.strip_prefix(b"*") {
        Some(suffix) => host.len() > suffix.len() && ends_with_ignore_case(host, suffix),
        None => host.eq_ignore_ascii_case(pattern),
    }
}

fn ends_with_ignore_case(s: &[u8], suffix: &[u8]) -> bool {
    s.len() >= suffix.len() && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// `host:port` -> `host` (an IPv6 literal keeps its brackets).
fn strip_port(host: &[u8]) -> &[u8] {
    match host.iter().rposition(|&b| b == b':') {
        Some(i) if !host[i..].contains(&b']') => &host[..i],
        _ => host,
    }
}

/// A glob where `*` matches any run of bytes (none included) and every other
/// byte itself. Linear in practice: the classic two-pointer match with one
/// backtrack point.
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// A route's share of the pools, for the admin API.
pub fn describe(config: &[RouteConfig]) -> Vec<serde_json::Value> {
    config
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["route"] = i.into();
            v
        })
        .collect()
}

#[cfg(test)]
mod tests;
