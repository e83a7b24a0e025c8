//! What a preview passes on between the browser and the sandbox, and what it keeps back:
//! hop-by-hop headers (RFC 9110 §7.6.1) go, and so do every credential of the api (the
//! `Authorization` header, the preview cookie, the token parameter). A WebSocket upgrade keeps
//! its `Connection: upgrade` and `Upgrade` headers, which the next hop needs. Pure functions.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};

use super::config::{COOKIE, TOKEN_PARAM};

/// Headers that concern one connection only, besides those `Connection` names.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// The protocol an upgrade request asks for (`websocket`), if it is one.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// Removes hop-by-hop headers (and those `Connection` lists); with `upgrade`, puts back
/// `Connection: upgrade` and `Upgrade: <upgrade>`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
}

/// Removes the api's credentials: `Authorization` and the preview cookie (other cookies, the
/// app's own, stay).
pub fn strip_credentials(headers: &mut HeaderMap) {
    headers.remove(header::AUTHORIZATION);
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && cookie_name(pair) != COOKIE)
        .map(str::to_string)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(value) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(header::COOKIE, value);
        }
    }
}

fn cookie_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(name, _)| name).trim()
}

/// The preview cookie's value, if the request carries one.
pub fn token_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| name.trim() == COOKIE)
        .map(|(_, value)| value.trim().to_string())
}

/// Splits the token parameter off a query: `(token, the rest of the query)`.
pub fn take_token_param(query: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(query) = query else {
        return (None, None);
    };
    let mut token = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some((TOKEN_PARAM, value)) => {
                token = Some(value.to_string());
                false
            }
            _ => *pair != TOKEN_PARAM && !pair.is_empty(),
        })
        .collect();
    (token, (!rest.is_empty()).then(|| rest.join("&")))
}

/// The `Set-Cookie` value that carries a token for `max_age_secs`: host-only (no `Domain`),
/// `HttpOnly` so the page's scripts cannot read it, `SameSite=Lax` so other sites' pages
/// cannot send it along with their requests, and `Secure` on an `https` origin.
pub fn set_cookie(token: &str, max_age_secs: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={token}; Path=/; Max-Age={max_age_secs}; HttpOnly; SameSite=Lax{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_and_credentials_stay_behind() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("authorization", "Bearer kx_secret"),
            ("cookie", "theme=dark; kubexec_preview=v1.tok"),
            ("cookie", "lang=en"),
            ("accept", "text/html"),
        ]);
        assert_eq!(upgrade_protocol(&h), None);
        strip_hop_by_hop(&mut h, None);
        strip_credentials(&mut h);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept", "cookie"]);
        assert_eq!(h["cookie"], "theme=dark; lang=en");
        let mut only_ours = headers(&[("cookie", "kubexec_preview=v1.tok")]);
        strip_credentials(&mut only_ours);
        assert!(only_ours.is_empty());
    }

    #[test]
    fn an_upgrade_keeps_its_two_headers() {
        let mut h = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "abc"),
        ]);
        let protocol = upgrade_protocol(&h);
        assert_eq!(
            protocol.as_ref().map(|p| p.as_bytes()),
            Some(&b"websocket"[..])
        );
        strip_hop_by_hop(&mut h, protocol);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "abc");
    }

    #[test]
    fn the_token_comes_from_the_query_or_the_cookie() {
        assert_eq!(take_token_param(None), (None, None));
        assert_eq!(
            take_token_param(Some("a=1&kubexec_token=t.x&b=2")),
            (Some("t.x".into()), Some("a=1&b=2".into()))
        );
        assert_eq!(
            take_token_param(Some("kubexec_token=t")),
            (Some("t".into()), None)
        );
        let h = headers(&[("cookie", "a=b; kubexec_preview=v1.x.y")]);
        assert_eq!(token_cookie(&h).as_deref(), Some("v1.x.y"));
        assert_eq!(token_cookie(&HeaderMap::new()), None);
        assert_eq!(
            set_cookie("t", 60, true),
            "kubexec_preview=t; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
    }
}
