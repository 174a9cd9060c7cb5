//! The status page: one HTML document, its stylesheet, script and icon,
//! compiled into the binary from `src/admin/page/` (no build step, nothing
//! fetched from elsewhere). The script polls `GET /status`.
//!
//! Every asset is sent with a strict Content-Security-Policy: only this
//! origin's script and style (no inline code), `fetch` only to this origin,
//! never framed. The page therefore builds its DOM with `createElement` and
//! draws its charts as SVG elements, never with inline `style` attributes.

use std::borrow::Cow;

use http::StatusCode;

use super::Reply;

const INDEX: &str = include_str!("page/index.html");
const STYLE: &str = include_str!("page/style.css");
const SCRIPT: &str = include_str!("page/app.js");
const ICON: &str = include_str!("page/icon.svg");

/// Headers on every page asset and on `/status`.
pub(super) const HEADERS: &str = "cache-control: no-store\r\n\
    content-security-policy: default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n\
    x-content-type-options: nosniff\r\n\
    x-frame-options: DENY\r\n\
    referrer-policy: no-referrer\r\n";

/// The page asset at `path`, if it is one.
pub(super) fn asset(path: &[u8]) -> Option<Reply> {
    let (content_type, body) = match path {
        b"/" | b"/index.html" => ("text/html; charset=utf-8", INDEX),
        b"/page.css" => ("text/css; charset=utf-8", STYLE),
        b"/page.js" => ("text/javascript; charset=utf-8", SCRIPT),
        b"/icon.svg" => ("image/svg+xml; charset=utf-8", ICON),
        _ => return None,
    };
    Some(Reply {
        status: StatusCode::OK,
        content_type,
        body: Cow::Borrowed(body),
        headers: HEADERS,
    })
}

/// The paths `asset` serves (a POST to one is a 405, not a 404).
pub(super) const PATHS: [&str; 5] = ["/", "/index.html", "/page.css", "/page.js", "/icon.svg"];
