//! Credentials kept out of what is logged, posted on the bus or published: the user
//! information of a URI (`rtsp://user:password@camera/stream`) becomes `***`.
//!
//! Used on every text that may carry a URI a user typed: a broker URI in an error message, a
//! property value in the debug log, an upstream `location`/`uri` that becomes an event's
//! `source`. The same rule is in `docker/gateway/vision-gateway.py` (`redact`), for the
//! pipeline the gateway prints.

use std::borrow::Cow;

/// `text` with the user information of every `scheme://user[:password]@host` in it replaced by
/// `***` (`scheme://***@host`). The authority ends at the first `/`, `?`, `#`, white space or
/// quote (RFC 3986: a `/` in a password must be percent-encoded); within it, the user
/// information is everything up to its last `@`.
pub fn uri_credentials(text: &str) -> Cow<'_, str> {
    if !text.contains("://") || !text.contains('@') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let after = at + 3;
        out.push_str(&rest[..after]);
        let authority_len = rest[after..]
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'') || c.is_whitespace())
            .unwrap_or(rest.len() - after);
        let authority = &rest[after..after + authority_len];
        match authority.rfind('@') {
            // Whatever stands before "://": a mistyped scheme (`mqtt//://u:pw@h`, found by
            // fuzzing) hides its password as well.
            Some(user_end) if user_end > 0 => {
                out.push_str("***");
                rest = &rest[after + user_end..];
            }
            _ => rest = &rest[after..],
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_information_is_hidden() {
        for (text, want) in [
            (
                "rtsp://user:pass@10.0.0.7/stream",
                "rtsp://***@10.0.0.7/stream",
            ),
            ("mqtt://u:hunter2@broker:1883", "mqtt://***@broker:1883"),
            ("mqtts://token@[::1]:8883", "mqtts://***@[::1]:8883"),
            // An unencoded '@' in the password: up to the last one of the authority.
            ("rtsp://admin:p@ss@cam/s?x=1", "rtsp://***@cam/s?x=1"),
            (
                "uridecodebin uri=\"rtsp://a:b@h/1\" ! x uri=rtsp://c:d@h/2 end",
                "uridecodebin uri=\"rtsp://***@h/1\" ! x uri=rtsp://***@h/2 end",
            ),
            (
                "cannot open rtsp://a:b@cam: refused",
                "cannot open rtsp://***@cam: refused",
            ),
            (
                "/tmp/x/rtsp://u:pw@h/red.rgb",
                "/tmp/x/rtsp://***@h/red.rgb",
            ),
            ("mqtt//://user:hunter2@broker/", "mqtt//://***@broker/"),
            ("://u:hunter2@h", "://***@h"),
            ("'mqtt ://u:hunter2@h'", "'mqtt ://***@h'"),
        ] {
            assert_eq!(uri_credentials(text), want, "{text}");
        }
    }

    #[test]
    fn everything_else_is_left_alone() {
        for text in [
            "mqtt://127.0.0.1:1883",
            "rtsp://cam/stream@2",
            "file:///srv/video@night.webm",
            "user@example.com wrote ://",
            "://@",
            "",
            "rtsp://cam/a rtsp://cam/b?u=x@y",
        ] {
            assert_eq!(uri_credentials(text), text);
        }
    }
}
