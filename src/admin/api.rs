//! The admin API's actions (POST): drain and undrain a backend, reload the
//! config. With `admin.token` set they need `Authorization: Bearer <token>`.

use http::StatusCode;
use serde_json::json;

use super::{Caller, Reply};
use crate::control::Control;

/// What a POST asks for.
enum Action<'a> {
    Reload,
    Drain(&'a str, bool),
}

pub(super) fn post(control: &Control, path: &[u8], caller: Caller<'_>) -> Reply {
    let path = std::str::from_utf8(path).unwrap_or("");
    let action = match path {
        "/reload" => Action::Reload,
        "/healthz" | "/readyz" | "/metrics" | "/backends" | "/config" | "/pools" | "/routes" => {
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
    if caller.from_browser {
        tracing::info!(
            path,
            "admin POST from a browser (Origin or Sec-Fetch-Site): 403"
        );
        return Reply::json(
            StatusCode::FORBIDDEN,
            &json!({ "error": "admin actions are not taken from a browser page (Origin or Sec-Fetch-Site present)" }),
        );
    }
    if let Some(token) = control.admin_token() {
        if !bearer_matches(caller.authorization, token.as_bytes()) {
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
    use super::bearer_matches;

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
