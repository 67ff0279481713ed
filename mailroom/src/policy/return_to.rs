//! `return_to`: where a person goes after a link did its work, allowed only when it matches
//! one of `RETURN_TO_ALLOWED`'s prefixes. Compared as parsed URLs — scheme, host, port and a
//! path prefix that ends at a segment — never as strings, so `https://app.example.com.evil.test`
//! or `https://app.example.com@evil.test` cannot pass for `https://app.example.com`, and a URL
//! with userinfo is refused outright.

use url::Url;

use crate::domain::Invalid;

/// The longest `return_to` taken: it travels in links, which mail clients cut past ~2 KB.
pub const MAX_LEN: usize = 1024;

/// The allowed prefixes (`RETURN_TO_ALLOWED`); empty: no `return_to` is allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList(Vec<Url>);

impl AllowList {
    /// Parses `RETURN_TO_ALLOWED`'s entries (blank ones left out): each an absolute URL with a
    /// host and no userinfo, query or fragment.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let mut out = Vec::new();
        for raw in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let url = Url::parse(raw)
                .map_err(|e| format!("RETURN_TO_ALLOWED: {raw:?} is not a URL ({e})"))?;
            if url.host_str().is_none_or(str::is_empty) {
                return Err(format!("RETURN_TO_ALLOWED: {raw:?} has no host"));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(format!(
                    "RETURN_TO_ALLOWED: {raw:?} must not carry a user or password"
                ));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(format!(
                    "RETURN_TO_ALLOWED: {raw:?} must not have a query or fragment"
                ));
            }
            out.push(url);
        }
        Ok(Self(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `return_to` as it will be stored and used (the parsed URL's own spelling), or why it
    /// is refused, in words for the caller.
    pub fn check(&self, raw: &str) -> Result<String, Invalid> {
        if self.0.is_empty() {
            return Err(Invalid(
                "is not allowed: this service has no RETURN_TO_ALLOWED".into(),
            ));
        }
        if raw.len() > MAX_LEN || raw.chars().any(char::is_control) {
            return Err(Invalid(format!(
                "must be a URL of at most {MAX_LEN} characters without control characters"
            )));
        }
        let url = Url::parse(raw.trim()).map_err(|e| Invalid(format!("is not a URL ({e})")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Invalid("must not carry a user or password".into()));
        }
        if self.0.iter().any(|p| matches(p, &url)) {
            Ok(url.to_string())
        } else {
            Err(Invalid(
                "is not one of the addresses this service may return to (RETURN_TO_ALLOWED)".into(),
            ))
        }
    }

    /// `check` for a value read back from a link or a form: the URL when it is still allowed.
    pub fn allowed(&self, raw: Option<&str>) -> Option<String> {
        raw.and_then(|r| self.check(r).ok())
    }
}

/// Same scheme, host and port, and `url`'s path is the prefix's or below it.
fn matches(prefix: &Url, url: &Url) -> bool {
    if prefix.scheme() != url.scheme()
        || prefix.host_str() != url.host_str()
        || prefix.port_or_known_default() != url.port_or_known_default()
    {
        return false;
    }
    let (p, u) = (prefix.path(), url.path());
    if p.ends_with('/') {
        u.starts_with(p)
    } else {
        u == p || u.strip_prefix(p).is_some_and(|rest| rest.starts_with('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn only_urls_under_an_allowed_prefix_pass() {
        let l = list(&["https://app.example.com/welcome", "myapp://callback/"]);
        let ok = [
            "https://app.example.com/welcome",
            "https://app.example.com/welcome/back?x=1#top",
            "https://APP.example.com:443/welcome",
            "myapp://callback/done",
        ];
        for u in ok {
            assert!(l.check(u).is_ok(), "{u}");
        }
        let refused = [
            "https://app.example.com/welcomeback",
            "https://app.example.com/",
            "http://app.example.com/welcome",
            "https://app.example.com:8443/welcome",
            "https://app.example.com.evil.test/welcome",
            "https://app.example.com@evil.test/welcome",
            "https://user:pw@app.example.com/welcome",
            "https://evil.test/https://app.example.com/welcome",
            "https://app.example.com/welcome/../admin",
            "//app.example.com/welcome",
            "javascript:alert(1)//app.example.com/welcome",
            "myapp://other/",
            "",
        ];
        for u in refused {
            assert!(l.check(u).is_err(), "{u}");
        }
        assert!(
            l.check(&format!(
                "https://app.example.com/welcome/{}",
                "a".repeat(MAX_LEN)
            ))
            .is_err()
        );
        assert!(l.check("https://app.example.com/welcome\n").is_err());
    }

    #[test]
    fn an_empty_list_allows_nothing_and_bad_entries_are_refused() {
        assert!(list(&[]).check("https://app.example.com/").is_err());
        assert!(list(&[" ", ""]).is_empty());
        for bad in [
            "not a url",
            "https://u:p@app.example.com/",
            "https://app.example.com/?a=1",
            "mailto:x@example.com",
        ] {
            assert!(AllowList::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
