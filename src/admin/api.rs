//! The admin API's actions (POST): drain and undrain a backend, reload the
//! config. With `admin.token` set they need `Authorization: Bearer <token>`.
//!
//! A POST from a browser is refused unless it comes from the status page
//! itself (same origin) and carries the right token: a cross-site form
//! cannot set `Authorization`, and a cross-site script could only with a
//! CORS preflight, which this listener never grants (OPTIONS is a 405).
//! Without a token configured, no browser POST is taken at all: the page is
//! read-only, since same-origin alone would admit a DNS-rebound page (which
//! `host` turns away before this, unless its name is listed).

use http::StatusCode;
use serde_json::json;

use super::{Caller, Reply};
use crate::control::Control;

/// What the request says about the page (if any) that sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Browser {
    /// Neither `Origin` nor a `Sec-Fetch-Site` other than `none`: curl,
    /// kubectl, a deploy script, or a URL typed into the address bar.
    No,
    /// A page of this listener's own origin (the status page).
    SameOrigin,
    /// Any other page.
    CrossSite,
}

/// Reads `Origin`, `Sec-Fetch-Site` and `Host`. Same origin means
/// `Sec-Fetch-Site: same-origin` (when sent) and an `Origin` of
/// `http://<Host>` or `https://<Host>` (when sent; the latter is the page
/// behind a TLS ingress); both absent is no browser at all.
pub(super) fn browser(
    origin: Option<&[u8]>,
    fetch_site: Option<&[u8]>,
    host: Option<&[u8]>,
) -> Browser {
    let fetch_site = fetch_site
        .map(<[u8]>::trim_ascii)
        .filter(|v| !v.eq_ignore_ascii_case(b"none"));
    if origin.is_none() && fetch_site.is_none() {
        return Browser::No;
    }
    let site_ok = fetch_site.map_or(true, |v| v.eq_ignore_ascii_case(b"same-origin"));
    let origin_ok = origin.map_or(true, |o| {
        let o = o.trim_ascii();
        let authority = o
            .strip_prefix(b"http://")
            .or_else(|| o.strip_prefix(b"https://"));
        match (authority, host) {
            (Some(authority), Some(host)) => {
                !host.is_empty() && authority.eq_ignore_ascii_case(host.trim_ascii())
            }
            _ => false,
        }
    });
    match site_ok && origin_ok {
        true => Browser::SameOrigin,
        false => Browser::CrossSite,
    }
}

/// Why a POST is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// From another site's page: 403 whatever the token.
    CrossSite,
    /// From the status page, but no `admin.token` is configured: 403.
    NoTokenConfigured,
    /// Without the right bearer token: 401.
    Token,
}

/// Whether a POST by `caller` is taken, with `token` the one configured.
fn admit(token: Option<&[u8]>, caller: Caller<'_>) -> Result<(), Refusal> {
    match (caller.browser, token) {
        (Browser::CrossSite, _) => return Err(Refusal::CrossSite),
        (Browser::SameOrigin, None) => return Err(Refusal::NoTokenConfigured),
        _ => {}
    }
    match token {
        Some(token) if !bearer_matches(caller.authorization, token) => Err(Refusal::Token),
        _ => Ok(()),
    }
}

/// What a POST asks for.
enum Action<'a> {
    Reload,
    Drain(&'a str, bool),
}

pub(super) fn post(control: &Control, path: &[u8], caller: Caller<'_>) -> Reply {
    let path = std::str::from_utf8(path).unwrap_or("");
    let action = match path {
        "/reload" => Action::Reload,
        "/healthz" | "/readyz" | "/metrics" | "/backends" | "/config" | "/pools" | "/routes"
        | "/status" => return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD"),
        _ if super::page::PATHS.contains(&path) => {
            return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD")
        }
        _ => match path
            .strip_prefix("/backends/")
            .and_then(|r| r.rsplit_once('/'))
        {
            Some((id, "drain")) => Action::Drain(id, true),
            Some((id, "undrain")) => Action::Drain(id, false),
            _ => return not_found(),
        },
    };
    let token = control.admin_token();
    match admit(token.as_deref().map(str::as_bytes), caller) {
        Ok(()) => {}
        Err(Refusal::CrossSite) => {
            tracing::info!(path, "admin POST from another site's page: 403");
            return Reply::json(
                StatusCode::FORBIDDEN,
                &json!({ "error": "admin actions are not taken from another site's page (Origin or Sec-Fetch-Site)" }),
            );
        }
        Err(Refusal::NoTokenConfigured) => {
            tracing::info!(
                path,
                "admin POST from a browser without admin.token configured: 403"
            );
            return Reply::json(
                StatusCode::FORBIDDEN,
                &json!({ "error": "admin actions from a browser need admin.token to be configured" }),
            );
        }
        Err(Refusal::Token) => {
            tracing::info!(path, "admin POST without the right bearer token: 401");
            return Reply::json(
                StatusCode::UNAUTHORIZED,
                &json!({ "error": "this needs Authorization: Bearer <admin.token>" }),
            );
        }
    }
    match action {
        Action::Reload => match control.reload() {
            Ok(()) => Reply::json(StatusCode::OK, &json!({ "reloaded": true })),
            Err(e) => Reply::json(
                StatusCode::BAD_REQUEST,
                &json!({ "reloaded": false, "error": e.to_string() }),
            ),
        },
        Action::Drain(id, on) => match control.drain(&id.to_ascii_lowercase(), on) {
            Some(backend) => Reply::json(StatusCode::OK, &backend),
            None => Reply::json(
                StatusCode::NOT_FOUND,
                &json!({ "error": format!("no backend {id} (see GET /backends)") }),
            ),
        },
    }
}

fn not_found() -> Reply {
    Reply::json(
        StatusCode::NOT_FOUND,
        &json!({ "error": "POST /reload, /backends/{host:port}/drain or /backends/{host:port}/undrain" }),
    )
}

/// `Bearer <token>`, the scheme in any case, compared in constant time.
fn bearer_matches(authorization: Option<&[u8]>, token: &[u8]) -> bool {
    let Some(value) = authorization else {
        return false;
    };
    let value = value.trim_ascii();
    if value.len() < 7 || !value[..7].eq_ignore_ascii_case(b"bearer ") {
        return false;
    }
    let given = value[7..].trim_ascii();
    given.len() == token.len()
        && given
            .iter()
            .zip(token)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::{admit, bearer_matches, browser, Browser, Caller, Refusal};

    const HOST: &[u8] = b"127.0.0.1:9090";

    fn from(origin: Option<&str>, site: Option<&str>) -> Browser {
        browser(
            origin.map(str::as_bytes),
            site.map(str::as_bytes),
            Some(HOST),
        )
    }

    fn caller(browser: Browser, bearer: Option<&'static str>) -> Caller<'static> {
        Caller {
            authorization: bearer.map(str::as_bytes),
            browser,
        }
    }

    #[test]
    fn a_page_is_same_origin_only_when_every_signal_says_so() {
        assert_eq!(from(None, None), Browser::No);
        assert_eq!(
            from(None, Some("none")),
            Browser::No,
            "typed into the address bar"
        );
        assert_eq!(from(None, Some("same-origin")), Browser::SameOrigin);
        assert_eq!(
            from(Some("http://127.0.0.1:9090"), None),
            Browser::SameOrigin
        );
        assert_eq!(
            from(Some("http://127.0.0.1:9090"), Some("same-origin")),
            Browser::SameOrigin
        );
        // The page behind a TLS ingress: its host, over https.
        assert_eq!(
            from(Some("https://127.0.0.1:9090"), Some("same-origin")),
            Browser::SameOrigin
        );
        assert_eq!(
            from(Some("HTTPS://127.0.0.1:9090"), None),
            Browser::CrossSite,
            "a browser serialises the scheme in lower case"
        );
        for (origin, site) in [
            (Some("https://evil.example"), None),
            (None, Some("cross-site")),
            (None, Some("same-site")),
            (Some("http://127.0.0.1:9090"), Some("cross-site")),
            (Some("https://127.0.0.1:9091"), Some("same-origin")),
            (Some("https://127.0.0.1:9090"), Some("cross-site")),
            (Some("ftp://127.0.0.1:9090"), None),
            (Some("https://"), None),
            (Some("http://127.0.0.1:9091"), None),
            (Some("http://127.0.0.1:9090.evil.example"), None),
            (Some("null"), None),
            (Some(""), None),
        ] {
            assert_eq!(
                from(origin, site),
                Browser::CrossSite,
                "{origin:?} {site:?}"
            );
        }
        // No Host to compare with: not the same origin.
        assert_eq!(
            browser(Some(b"http://127.0.0.1:9090"), None, None),
            Browser::CrossSite
        );
    }

    #[test]
    fn a_cross_site_page_is_refused_even_with_the_right_token() {
        let c = caller(Browser::CrossSite, Some("Bearer s3cret"));
        assert_eq!(admit(Some(b"s3cret"), c), Err(Refusal::CrossSite));
        assert_eq!(admit(None, c), Err(Refusal::CrossSite));
    }

    #[test]
    fn the_status_page_with_a_wrong_or_no_token_is_unauthorized() {
        for bearer in [Some("Bearer wrong"), None] {
            let c = caller(Browser::SameOrigin, bearer);
            assert_eq!(admit(Some(b"s3cret"), c), Err(Refusal::Token), "{bearer:?}");
        }
    }

    #[test]
    fn the_status_page_with_the_right_token_is_admitted() {
        let c = caller(Browser::SameOrigin, Some("Bearer s3cret"));
        assert_eq!(admit(Some(b"s3cret"), c), Ok(()));
    }

    #[test]
    fn without_a_configured_token_no_browser_post_is_taken() {
        for b in [Browser::SameOrigin, Browser::CrossSite] {
            let c = caller(b, Some("Bearer anything"));
            assert!(admit(None, c).is_err(), "{b:?}");
        }
        assert_eq!(
            admit(None, caller(Browser::SameOrigin, None)),
            Err(Refusal::NoTokenConfigured)
        );
        // Scripts and curl: as before, no token configured means open.
        assert_eq!(admit(None, caller(Browser::No, None)), Ok(()));
        assert_eq!(
            admit(Some(b"s3cret"), caller(Browser::No, None)),
            Err(Refusal::Token)
        );
    }

    #[test]
    fn bearer_tokens_match_exactly() {
        assert!(bearer_matches(Some(b"Bearer s3cret"), b"s3cret"));
        assert!(bearer_matches(Some(b"bearer  s3cret "), b"s3cret"));
        for bad in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cretx",
            b"Basic s3cret",
            b"s3cret",
            b"",
        ] {
            assert!(!bearer_matches(Some(bad), b"s3cret"), "{bad:?}");
        }
        assert!(!bearer_matches(None, b"s3cret"));
    }
}
