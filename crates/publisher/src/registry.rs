//! A small, synchronous Registry HTTP API v2 client (ureq): manifests with content
//! negotiation, streamed blobs, anonymous or basic-credential bearer tokens.
//! With `--tls-verify=false` certificates are not checked and a registry that only
//! speaks plain HTTP (a loopback `docker-registry`) is used over `http://`.
//!
//! A registry is hostile until its answers check out, so every transfer is
//! bounded: in time by an overall deadline that grows with the declared size
//! (`TransferLimits`, besides ureq's per-read timeout), in size by the caller
//! (`blob::ExactBlob` for blobs, caps for manifests and tokens; a
//! `Content-Length` that disagrees is refused before the body is read). Error
//! bodies are never read. Redirects are followed here, not by ureq: at most
//! `MAX_REDIRECTS`, only to `http`/`https` (never from `https` to `http` while
//! certificates are verified), with credentials only for the host they are for,
//! and the body of a redirect is not read.

use std::io::{self, Read};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use ureq::http::{Response, Uri};
use ureq::{Agent, Body};

use crate::blob::read_capped;
use crate::oci::{
    MAX_MANIFEST_BYTES, MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST,
};
use crate::{Error, Result};

/// Redirects followed per request (registries redirect blobs to a CDN once).
pub const MAX_REDIRECTS: usize = 5;
/// The largest token response accepted (JWTs are a few KiB).
pub const MAX_TOKEN_RESPONSE: u64 = 1 << 20;

/// How long one transfer may take in all: `floor` plus its size at `min_rate`
/// bytes per second. A stalled registry is caught by the per-read timeout; a
/// registry that drips (one byte before each per-read timeout) by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimits {
    pub floor: Duration,
    pub min_rate: u64,
}

impl Default for TransferLimits {
    fn default() -> TransferLimits {
        TransferLimits {
            floor: Duration::from_secs(60),
            min_rate: 100 * 1024,
        }
    }
}

impl TransferLimits {
    /// The deadline of a transfer of `bytes`.
    pub fn budget(&self, bytes: u64) -> Duration {
        self.floor + Duration::from_secs_f64(bytes as f64 / self.min_rate.max(1) as f64)
    }
    /// `budget(bytes)` and how it came about, for messages.
    pub fn explain(&self, bytes: u64) -> String {
        format!(
            "{:.1}s (--transfer-timeout {}s + {bytes} bytes at --transfer-min-rate {} bytes/s)",
            self.budget(bytes).as_secs_f64(),
            self.floor.as_secs_f64(),
            self.min_rate
        )
    }
}

/// A response body read under the transfer's deadline: ureq enforces it on
/// the socket (`timeout_global`); this says so (the reader's consumer names
/// the transfer).
pub struct Deadline<R> {
    inner: R,
    until: Instant,
    explain: String,
}

impl<R: Read> Read for Deadline<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if Instant::now() >= self.until {
            return Err(self.expired());
        }
        self.inner.read(buf).map_err(|e| {
            if Instant::now() + Duration::from_millis(200) >= self.until {
                self.expired()
            } else {
                e
            }
        })
    }
}

impl<R> Deadline<R> {
    fn expired(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "not complete within the transfer deadline of {}",
                self.explain
            ),
        )
    }
}

/// Where `location` (a redirect's `Location`) sends a request for `from`:
/// absolute, scheme-relative, host-relative or path-relative, resolved; only
/// `http`/`https` URLs with a host are accepted.
pub fn redirect_target(from: &str, location: &str) -> std::result::Result<String, String> {
    let refuse = || format!("redirect to {location:?}: only http(s) URLs with a host are followed");
    let base: Uri = from.parse().map_err(|e| format!("{from}: {e}"))?;
    let scheme = base.scheme_str().unwrap_or("https");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or("");
    let loc = location.trim();
    let has_scheme = loc.split_once(':').is_some_and(|(s, _)| {
        s.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
    });
    let target = if has_scheme {
        if !is_http_url(loc) {
            return Err(refuse());
        }
        loc.to_string()
    } else if let Some(rest) = loc.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if loc.starts_with('/') {
        format!("{scheme}://{authority}{loc}")
    } else {
        let path = base.path();
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{scheme}://{authority}{dir}{loc}")
    };
    let t: Uri = target
        .parse()
        .map_err(|e| format!("redirect to {location:?}: {e}"))?;
    match t.scheme_str() {
        Some("http" | "https") if t.host().is_some_and(|h| !h.is_empty()) => Ok(target),
        _ => Err(refuse()),
    }
}

/// Starts with `http://` or `https://` (any case).
fn is_http_url(u: &str) -> bool {
    let l = u.get(..8).unwrap_or(u).to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

fn host_of(url: &str) -> Option<String> {
    let u: Uri = url.parse().ok()?;
    let a = u.authority()?;
    let port = a.port_u16().or(match u.scheme_str() {
        Some("http") => Some(80),
        Some("https") => Some(443),
        _ => None,
    })?;
    Some(format!("{}:{port}", a.host()))
}

pub struct Registry {
    agent: Agent,
    host: String,
    repository: String,
    tls_verify: bool,
    limits: TransferLimits,
    /// The scheme that worked (`https` first; `http` only without TLS verification).
    scheme: Mutex<Option<&'static str>>,
    token: Mutex<Option<String>>,
    /// `user:password` from `REGISTRY_AUTH` (optional).
    creds: Option<String>,
}

/// A token endpoint's answer (Docker's token spec names it `token`, OAuth
/// 2 `access_token`; either will do).
#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
}

fn parse_challenge(h: &str) -> Option<(String, Vec<(String, String)>)> {
    let (scheme, rest) = h.trim().split_once(' ')?;
    let mut params = Vec::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, r) = s.split_once('=')?;
        let r = r.trim_start();
        let (v, r) = if let Some(r) = r.strip_prefix('"') {
            let end = r.find('"')?;
            (&r[..end], &r[end + 1..])
        } else {
            let end = r.find(',').unwrap_or(r.len());
            (&r[..end], &r[end..])
        };
        params.push((k.trim().to_string(), v.to_string()));
        s = r.trim_start_matches([',', ' ']);
    }
    Some((scheme.to_lowercase(), params))
}

impl Registry {
    pub fn new(host: &str, repository: &str, tls_verify: bool, limits: TransferLimits) -> Registry {
        let tls = ureq::tls::TlsConfig::builder()
            .disable_verification(!tls_verify)
            .build();
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .https_only(tls_verify)
            // followed by `call`, which checks each target first
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(15)))
            // a registry that stops sending fails the layer instead of hanging
            // the publisher; one that drips hits the transfer deadline
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .max_response_header_size(64 * 1024)
            .user_agent("cvmfs-podman/0.1")
            .build()
            .into();
        Registry {
            agent,
            host: host.to_string(),
            repository: repository.to_string(),
            tls_verify,
            limits,
            scheme: Mutex::new(None),
            token: Mutex::new(None),
            creds: std::env::var("REGISTRY_AUTH").ok(),
        }
    }

    fn what(&self) -> String {
        format!("registry {}/{}", self.host, self.repository)
    }

    /// GET `url` until `until`, following redirects (see the module comment).
    /// `auth` goes only to `auth_host` (`host:port`).
    fn call(
        &self,
        url: &str,
        accept: Option<&str>,
        auth: Option<(&str, String)>,
        until: Instant,
        explain: &str,
    ) -> std::result::Result<Response<Body>, String> {
        let mut url = url.to_string();
        let mut hops = 0;
        loop {
            let remaining = until.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(format!(
                    "{url}: not answered within the transfer deadline of {explain}"
                ));
            }
            let mut req = self
                .agent
                .get(&url)
                .config()
                .timeout_global(Some(remaining))
                .build();
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some((auth_host, value)) = &auth {
                if host_of(&url).as_deref() == Some(*auth_host) {
                    req = req.header("Authorization", value);
                }
            }
            let r = match req.call() {
                Ok(r) => r,
                Err(ureq::Error::Timeout(t)) if Instant::now() + Duration::from_millis(200) >= until => {
                    return Err(format!(
                        "{url}: not answered within the transfer deadline of {explain} (timeout: {t})"
                    ))
                }
                Err(e) => return Err(format!("{url}: {e}")),
            };
            if !r.status().is_redirection() || r.status() == 304 {
                return Ok(r);
            }
            let location = r
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| format!("{url}: HTTP {} without a usable Location", r.status()))?
                .to_string();
            // the redirect's body is not read: dropping the response closes it
            drop(r);
            let next = redirect_target(&url, &location).map_err(|e| format!("{url}: {e}"))?;
            if self.tls_verify && url.starts_with("https:") && !next.starts_with("https:") {
                return Err(format!(
                    "{url}: redirect to {next}: from https to plain http refused"
                ));
            }
            if hops == MAX_REDIRECTS {
                return Err(format!("{url}: more than {MAX_REDIRECTS} redirects"));
            }
            hops += 1;
            url = next;
        }
    }

    fn send(
        &self,
        url_path: &str,
        accept: Option<&str>,
        until: Instant,
        explain: &str,
    ) -> Result<Response<Body>> {
        let schemes: Vec<&'static str> = match *self.scheme.lock().unwrap() {
            Some(s) => vec![s],
            None if self.tls_verify => vec!["https"],
            None => vec!["https", "http"],
        };
        let auth_host = host_of(&format!("https://{}", self.host)).unwrap_or_default();
        let mut last = None;
        for scheme in schemes {
            let url = format!("{scheme}://{}{url_path}", self.host);
            let auth_host = if scheme == "http" {
                host_of(&url).unwrap_or_default()
            } else {
                auth_host.clone()
            };
            let auth = self
                .token
                .lock()
                .unwrap()
                .as_ref()
                .map(|t| (auth_host.as_str(), format!("Bearer {t}")));
            match self.call(&url, accept, auth, until, explain) {
                Ok(r) => {
                    *self.scheme.lock().unwrap() = Some(scheme);
                    return Ok(r);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(Error::msg(format!(
            "{}: {}",
            self.what(),
            last.unwrap_or_default()
        )))
    }

    /// GET with one round of bearer-token authentication on 401; the request
    /// (and the body read after it) has `budget`; returns its deadline too.
    fn get(
        &self,
        url_path: &str,
        accept: Option<&str>,
        budget_bytes: u64,
    ) -> Result<(Response<Body>, Instant)> {
        let explain = self.limits.explain(budget_bytes);
        let until = Instant::now() + self.limits.budget(budget_bytes);
        let r = self.send(url_path, accept, until, &explain)?;
        if r.status() != 401 {
            return Ok((r, until));
        }
        let challenge = r
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        drop(r);
        self.fetch_token(&challenge)?;
        // the token took its own time: the request starts afresh
        let until = Instant::now() + self.limits.budget(budget_bytes);
        let r = self.send(url_path, accept, until, &explain)?;
        if r.status() == 401 {
            return Err(Error::msg(format!(
                "{}: access denied (HTTP 401 with a token); set REGISTRY_AUTH=user:password",
                self.what()
            )));
        }
        Ok((r, until))
    }

    /// The realm of a `WWW-Authenticate: Bearer` challenge (checked: an
    /// http(s) URL with a host, https while certificates are verified) and the
    /// token URL with its `service` and `scope` query.
    fn token_url(&self, challenge: &str) -> Result<(String, String)> {
        let (scheme, params) = parse_challenge(challenge).ok_or_else(|| {
            Error::msg(format!(
                "{}: 401 without a usable WWW-Authenticate",
                self.what()
            ))
        })?;
        if scheme != "bearer" {
            return Err(Error::msg(format!(
                "{}: unsupported auth scheme {scheme:?}",
                self.what()
            )));
        }
        let get = |k: &str| params.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
        let realm = get("realm").ok_or_else(|| {
            Error::msg(format!("{}: bearer challenge without realm", self.what()))
        })?;
        let bad_realm =
            |why: &str| Error::msg(format!("{}: token realm {realm:?}: {why}", self.what()));
        if !is_http_url(&realm) {
            return Err(bad_realm("not an http(s) URL"));
        }
        let realm_uri: Uri = realm.parse().map_err(|e| bad_realm(&format!("{e}")))?;
        match realm_uri.scheme_str() {
            Some("https") => {}
            Some("http") if !self.tls_verify => {}
            Some("http") => return Err(bad_realm("plain http while certificates are verified")),
            _ => return Err(bad_realm("not an http(s) URL")),
        }
        if !realm_uri.host().is_some_and(|h| !h.is_empty()) {
            return Err(bad_realm("not a URL with a host"));
        }
        let mut query = Vec::new();
        if let Some(s) = get("service") {
            query.push(("service", s));
        }
        query.push((
            "scope",
            get("scope").unwrap_or_else(|| format!("repository:{}:pull", self.repository)),
        ));
        let url = format!(
            "{realm}{}{}",
            if realm_uri.query().is_some() {
                "&"
            } else {
                "?"
            },
            query
                .iter()
                .map(|(k, v)| format!("{k}={}", percent_encode(v)))
                .collect::<Vec<_>>()
                .join("&")
        );
        Ok((realm, url))
    }

    fn fetch_token(&self, challenge: &str) -> Result<()> {
        let (realm, url) = self.token_url(challenge)?;
        let auth_host = host_of(&realm).unwrap_or_default();
        let auth = self.creds.as_ref().map(|c| {
            use crate::tarsplit::base64;
            (
                auth_host.as_str(),
                format!("Basic {}", base64(c.as_bytes())),
            )
        });
        let explain = self.limits.explain(MAX_TOKEN_RESPONSE);
        let until = Instant::now() + self.limits.budget(MAX_TOKEN_RESPONSE);
        let what = format!("{}: token from {realm}", self.what());
        let resp = self
            .call(&url, None, auth, until, &explain)
            .map_err(|e| Error::msg(format!("{what}: {e}")))?;
        if resp.status() != 200 {
            return Err(Error::msg(format!("{what}: HTTP {}", resp.status())));
        }
        let body = self.read_body(resp, MAX_TOKEN_RESPONSE, until, &what, &explain)?;
        let answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|e| Error::msg(format!("{what}: {e}")))?;
        let token = answer
            .token
            .or(answer.access_token)
            .ok_or_else(|| Error::msg(format!("{what}: no token in the response")))?;
        if token.is_empty()
            || token.len() > 64 * 1024
            || !token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Error::msg(format!(
                "{what}: the token is not a printable header value"
            )));
        }
        *self.token.lock().unwrap() = Some(token);
        Ok(())
    }

    /// Refuse a body whose `Content-Length` is larger than `cap` (or, with
    /// `exact`, differs from it) before reading any of it.
    fn check_length(&self, r: &Response<Body>, cap: u64, exact: bool, what: &str) -> Result<()> {
        let Some(len) = r.body().content_length() else {
            return Ok(());
        };
        if len > cap || (exact && len != cap) {
            return Err(Error::msg(format!(
                "{what}: the registry announces {len} bytes, {} {cap}",
                if exact {
                    "but the manifest declares"
                } else {
                    "more than the limit of"
                }
            )));
        }
        Ok(())
    }

    /// The whole body, at most `cap` bytes, before `until`.
    fn read_body(
        &self,
        r: Response<Body>,
        cap: u64,
        until: Instant,
        what: &str,
        explain: &str,
    ) -> Result<Vec<u8>> {
        self.check_length(&r, cap, false, what)?;
        let body = Deadline {
            inner: r.into_body().into_reader(),
            until,
            explain: explain.to_string(),
        };
        read_capped(body, cap, what)
    }

    /// The manifest bytes and served media type of `reference` (tag or
    /// digest); `declared`: its size as the index that named it declares.
    pub fn manifest(&self, reference: &str, declared: Option<u64>) -> Result<(Vec<u8>, String)> {
        let what = format!("{}: manifest {reference}", self.what());
        let cap = declared.unwrap_or(MAX_MANIFEST_BYTES);
        if cap > MAX_MANIFEST_BYTES {
            return Err(Error::msg(format!(
                "{what}: declared size {cap} bytes, more than {MAX_MANIFEST_BYTES}"
            )));
        }
        let accept = [
            MT_OCI_MANIFEST,
            MT_DOCKER_MANIFEST,
            MT_OCI_INDEX,
            MT_DOCKER_LIST,
        ]
        .join(", ");
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let (r, until) = self.get(&path, Some(&accept), cap)?;
        if r.status() != 200 {
            return Err(Error::msg(format!("{what}: HTTP {}", r.status())));
        }
        let mt = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let body = self.read_body(r, cap, until, &what, &self.limits.explain(cap))?;
        if let Some(d) = declared {
            if body.len() as u64 != d {
                return Err(Error::msg(format!(
                    "{what}: {} bytes, the index declares {d}",
                    body.len()
                )));
            }
        }
        Ok((body, mt))
    }

    /// A stream of blob `digest` of declared `size`, under its transfer
    /// deadline (the caller bounds it to `size` and verifies the digest).
    pub fn blob(&self, digest: &str, size: u64) -> Result<Box<dyn Read + Send>> {
        let what = format!("{}: blob {digest}", self.what());
        let path = format!("/v2/{}/blobs/{digest}", self.repository);
        let (r, until) = self.get(&path, None, size)?;
        if r.status() != 200 {
            return Err(Error::msg(format!("{what}: HTTP {}", r.status())));
        }
        self.check_length(&r, size, true, &what)?;
        Ok(Box::new(Deadline {
            inner: r.into_body().into_reader(),
            until,
            explain: self.limits.explain(size),
        }))
    }
}

/// `application/x-www-form-urlencoded` escaping of a query value.
fn percent_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(s, "bearer");
        assert_eq!(
            p[0],
            ("realm".into(), "https://auth.docker.io/token".into())
        );
        assert_eq!(p[2].1, "repository:library/busybox:pull");
    }

    #[test]
    fn redirects_resolve_and_only_to_http() {
        let from = "https://r.io:5000/v2/a/blobs/sha256:x";
        assert_eq!(
            redirect_target(from, "https://cdn.io/b?x=1").unwrap(),
            "https://cdn.io/b?x=1"
        );
        assert_eq!(
            redirect_target(from, "/v2/b").unwrap(),
            "https://r.io:5000/v2/b"
        );
        assert_eq!(
            redirect_target(from, "//cdn.io/c").unwrap(),
            "https://cdn.io/c"
        );
        assert_eq!(
            redirect_target(from, "y").unwrap(),
            "https://r.io:5000/v2/a/blobs/y"
        );
        for bad in ["file:///etc/passwd", "ftp://x/y", "gopher:x", "http://"] {
            assert!(redirect_target(from, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deadline_grows_with_size() {
        let l = TransferLimits {
            floor: Duration::from_secs(10),
            min_rate: 1000,
        };
        assert_eq!(l.budget(5000), Duration::from_secs(15));
        assert!(l.explain(5000).contains("15.0s"), "{}", l.explain(5000));
    }
}
