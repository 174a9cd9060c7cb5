//! Who is calling: the principal a session is bound to (`[sessions] bind`).
//!
//! Tether reads the identity but does not verify it: the server (or the
//! auth proxy in front) does. That is still sound for binding: a session
//! bound to alice needs a request whose credential names alice, and a second
//! user cannot mint a credential the server accepts with alice's subject. A
//! request that forges one gets past Tether to a server that refuses it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::http1::head::Fields;

/// What a session is bound to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Bind {
    /// Nothing: whoever holds the id uses the session.
    #[default]
    None,
    /// Claims of the bearer JWT's payload (`jwt:sub`, `jwt:sub+iss`).
    Jwt(Vec<String>),
    /// An identity header an auth proxy in front sets (`header:NAME`, lowercase).
    Header(String),
    /// The whole `Authorization` value (a refreshed token is another principal).
    Authorization,
}

impl Bind {
    /// Parses `none`, `jwt:CLAIM[+CLAIM...]`, `header:NAME` or `authorization`.
    pub fn parse(text: &str) -> Option<Bind> {
        let token = |v: &str| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        match text.split_once(':') {
            None if text == "none" => Some(Bind::None),
            None if text == "authorization" => Some(Bind::Authorization),
            Some(("jwt", claims)) => {
                let claims: Vec<String> = claims.split('+').map(str::to_owned).collect();
                let ok = claims
                    .iter()
                    .all(|c| !c.is_empty() && !c.contains(['\0', '"']));
                ok.then_some(Bind::Jwt(claims))
            }
            Some(("header", name)) if token(name) => Some(Bind::Header(name.to_ascii_lowercase())),
            _ => None,
        }
    }

    pub fn is_none(&self) -> bool {
        *self == Bind::None
    }

    /// The request's principal, as bytes that name the mode too (so a
    /// change of mode never matches an old binding); `None` when it has none.
    pub fn principal(&self, buf: &[u8], fields: &Fields) -> Option<Vec<u8>> {
        if *self == Bind::None {
            return None;
        }
        let mut out = self.to_string().into_bytes();
        out.push(0);
        match self {
            Bind::None => return None,
            Bind::Header(name) => out.extend_from_slice(one(buf, fields, name.as_bytes())?),
            Bind::Authorization => out.extend_from_slice(one(buf, fields, b"authorization")?),
            Bind::Jwt(claims) => {
                let auth = one(buf, fields, b"authorization")?;
                jwt_claims(auth, claims, &mut out)?;
            }
        }
        Some(out)
    }
}

impl std::fmt::Display for Bind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bind::None => f.write_str("none"),
            Bind::Jwt(claims) => write!(f, "jwt:{}", claims.join("+")),
            Bind::Header(name) => write!(f, "header:{name}"),
            Bind::Authorization => f.write_str("authorization"),
        }
    }
}

impl serde::Serialize for Bind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The value of the one field `name` (lowercase), trimmed. Absent, empty or
/// repeated (two identities: which is the caller's?) is none.
fn one<'a>(buf: &'a [u8], fields: &Fields, name: &[u8]) -> Option<&'a [u8]> {
    let mut found = fields
        .list
        .iter()
        .filter(|f| buf[f.name.clone()].eq_ignore_ascii_case(name));
    let value = buf[found.next()?.value.clone()].trim_ascii();
    (found.next().is_none() && !value.is_empty()).then_some(value)
}

/// Appends the `claims` of the bearer JWT in `authorization` to `out`, each
/// as its JSON text and a NUL; `None` if it is not a bearer JWT or lacks one.
fn jwt_claims(authorization: &[u8], claims: &[String], out: &mut Vec<u8>) -> Option<()> {
    let (scheme, token) = authorization.split_at(authorization.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let mut parts = token.trim_ascii().split(|&b| b == b'.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let payload = payload
        .strip_suffix(b"==")
        .or(payload.strip_suffix(b"="))
        .unwrap_or(payload);
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&json).ok()?;
    for claim in claims {
        match object.get(claim)? {
            serde_json::Value::Null => return None,
            value => out.extend_from_slice(value.to_string().as_bytes()),
        }
        out.push(0);
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::RequestHead;

    fn jwt(payload: &str) -> String {
        let enc = |s: &str| URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", enc(r#"{"alg":"RS256"}"#), enc(payload))
    }

    fn principal(bind: &str, headers: &str) -> Option<Vec<u8>> {
        let head = format!("POST /mcp HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        let parsed = RequestHead::parse(head.as_bytes(), 1 << 16)
            .unwrap()
            .unwrap();
        Bind::parse(bind)
            .unwrap()
            .principal(head.as_bytes(), &parsed.fields)
    }

    #[test]
    fn modes_parse_and_print_back() {
        for text in [
            "none",
            "jwt:sub",
            "jwt:sub+iss",
            "header:x-user",
            "authorization",
        ] {
            assert_eq!(Bind::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            Bind::parse("header:X-User").unwrap().to_string(),
            "header:x-user"
        );
        for bad in [
            "",
            "jwt:",
            "jwt:sub+",
            "header:",
            "header:a b",
            "cookie:x",
            "sub",
        ] {
            assert_eq!(Bind::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_jwt_subject_survives_a_refresh_and_tells_callers_apart() {
        let alice = principal(
            "jwt:sub",
            &format!(
                "Authorization: Bearer {}\r\n",
                jwt(r#"{"sub":"alice","iat":1}"#)
            ),
        );
        let refreshed = principal(
            "jwt:sub",
            &format!(
                "authorization: bearer {}\r\n",
                jwt(r#"{"iat":2,"sub":"alice","jti":"x"}"#)
            ),
        );
        let bob = principal(
            "jwt:sub",
            &format!("Authorization: Bearer {}\r\n", jwt(r#"{"sub":"bob"}"#)),
        );
        assert!(alice.is_some());
        assert_eq!(alice, refreshed);
        assert_ne!(alice, bob);
    }

    #[test]
    fn several_claims_all_count() {
        let p = |payload: &str| {
            principal(
                "jwt:sub+iss",
                &format!("Authorization: Bearer {}\r\n", jwt(payload)),
            )
        };
        assert_ne!(p(r#"{"sub":"a","iss":"x"}"#), p(r#"{"sub":"a","iss":"y"}"#));
        assert_eq!(
            p(r#"{"sub":"a","iss":"x"}"#),
            p(r#"{"iss":"x","sub":"a","n":1}"#)
        );
        // A number and the string of its digits are not the same subject.
        assert_ne!(p(r#"{"sub":1,"iss":"x"}"#), p(r#"{"sub":"1","iss":"x"}"#));
        assert_eq!(p(r#"{"sub":"a"}"#), None, "iss missing");
        assert_eq!(p(r#"{"sub":"a","iss":null}"#), None);
    }

    #[test]
    fn what_is_not_a_bearer_jwt_has_no_principal() {
        for headers in [
            String::new(),
            "Authorization: Basic YWxpY2U6eA==\r\n".into(),
            "Authorization: Bearer opaque-token\r\n".into(),
            "Authorization: Bearer a.!!!.c\r\n".into(),
            format!("Authorization: Bearer {}.extra\r\n", jwt(r#"{"sub":"a"}"#)),
            format!("Authorization: Bearer {}\r\n", jwt(r#"["sub"]"#)),
            format!(
                "Authorization: Bearer {}\r\nAuthorization: Bearer {}\r\n",
                jwt(r#"{"sub":"a"}"#),
                jwt(r#"{"sub":"b"}"#)
            ),
        ] {
            assert_eq!(principal("jwt:sub", &headers), None, "{headers:?}");
        }
    }

    #[test]
    fn headers_and_the_whole_credential() {
        let h = |v: &str| principal("header:x-user", v);
        assert_eq!(h("X-User: alice\r\n"), h("x-user:  alice \r\n"));
        assert_ne!(h("X-User: alice\r\n"), h("X-User: bob\r\n"));
        assert_eq!(h("X-User: \r\n"), None);
        assert_eq!(h("X-User: a\r\nX-User: b\r\n"), None);
        let a = |v: &str| principal("authorization", v);
        assert_ne!(
            a("Authorization: Bearer t1\r\n"),
            a("Authorization: Bearer t2\r\n")
        );
        // The same text under two modes is two principals.
        assert_ne!(
            principal("header:authorization", "Authorization: x\r\n"),
            a("Authorization: x\r\n")
        );
    }
}
