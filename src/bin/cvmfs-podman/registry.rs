//! A small, synchronous Registry HTTP API v2 client (ureq): manifests with content
//! negotiation, streamed blobs, anonymous or basic-credential bearer tokens.
//! With `--tls-verify=false` certificates are not checked and a registry that only
//! speaks plain HTTP (a loopback `docker-registry`) is used over `http://`.

use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use cvmfs_graphdriver::publish::{Error, Result};
use ureq::http::Response;
use ureq::{Agent, Body};

use crate::source::{
    read_limited, MT_DOCKER_LIST, MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST,
};

pub struct Registry {
    agent: Agent,
    host: String,
    repository: String,
    tls_verify: bool,
    /// The scheme that worked (`https` first; `http` only without TLS verification).
    scheme: Mutex<Option<&'static str>>,
    token: Mutex<Option<String>>,
    /// `user:password` from `REGISTRY_AUTH` (optional).
    creds: Option<String>,
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
    pub fn new(host: &str, repository: &str, tls_verify: bool) -> Registry {
        let tls = ureq::tls::TlsConfig::builder()
            .disable_verification(!tls_verify)
            .build();
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls)
            .timeout_connect(Some(Duration::from_secs(15)))
            // a registry that stops sending fails the layer instead of hanging
            // the publisher (large blobs may take long, but not stall)
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent("cvmfs-podman/0.1")
            .build()
            .into();
        Registry {
            agent,
            host: host.to_string(),
            repository: repository.to_string(),
            tls_verify,
            scheme: Mutex::new(None),
            token: Mutex::new(None),
            creds: std::env::var("REGISTRY_AUTH").ok(),
        }
    }

    fn what(&self) -> String {
        format!("registry {}/{}", self.host, self.repository)
    }

    fn send(&self, url_path: &str, accept: Option<&str>) -> Result<Response<Body>> {
        let schemes: Vec<&'static str> = match *self.scheme.lock().unwrap() {
            Some(s) => vec![s],
            None if self.tls_verify => vec!["https"],
            None => vec!["https", "http"],
        };
        let mut last = None;
        for scheme in schemes {
            let url = format!("{scheme}://{}{url_path}", self.host);
            let mut req = self.agent.get(&url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(t) = self.token.lock().unwrap().as_ref() {
                req = req.header("Authorization", &format!("Bearer {t}"));
            }
            match req.call() {
                Ok(r) => {
                    *self.scheme.lock().unwrap() = Some(scheme);
                    return Ok(r);
                }
                Err(e) => last = Some(format!("{url}: {e}")),
            }
        }
        Err(Error::msg(format!(
            "{}: {}",
            self.what(),
            last.unwrap_or_default()
        )))
    }

    /// GET with one round of bearer-token authentication on 401.
    fn get(&self, url_path: &str, accept: Option<&str>) -> Result<Response<Body>> {
        let r = self.send(url_path, accept)?;
        if r.status() != 401 {
            return Ok(r);
        }
        let challenge = r
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let (scheme, params) = parse_challenge(&challenge).ok_or_else(|| {
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
        let mut q = Vec::new();
        if let Some(s) = get("service") {
            q.push(("service", s));
        }
        q.push((
            "scope",
            get("scope").unwrap_or_else(|| format!("repository:{}:pull", self.repository)),
        ));
        let mut req = self.agent.get(&realm);
        for (k, v) in &q {
            req = req.query(k, v);
        }
        if let Some(c) = &self.creds {
            use cvmfs_graphdriver::publish::tarsplit::base64;
            req = req.header("Authorization", &format!("Basic {}", base64(c.as_bytes())));
        }
        let resp = req
            .call()
            .map_err(|e| Error::msg(format!("{}: token from {realm}: {e}", self.what())))?;
        if resp.status() != 200 {
            return Err(Error::msg(format!(
                "{}: token from {realm}: HTTP {}",
                self.what(),
                resp.status()
            )));
        }
        let body = read_limited(resp.into_body().into_reader(), "token response")?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| Error::msg(format!("{}: token response: {e}", self.what())))?;
        let token = v["token"]
            .as_str()
            .or_else(|| v["access_token"].as_str())
            .ok_or_else(|| Error::msg(format!("{}: token response without token", self.what())))?;
        *self.token.lock().unwrap() = Some(token.to_string());
        let r = self.send(url_path, accept)?;
        if r.status() == 401 {
            return Err(Error::msg(format!(
                "{}: access denied (HTTP 401 with a token); set REGISTRY_AUTH=user:password",
                self.what()
            )));
        }
        Ok(r)
    }

    /// The manifest bytes and media type of `reference` (tag or digest).
    pub fn manifest(&self, reference: &str) -> Result<(Vec<u8>, String)> {
        let accept = [
            MT_OCI_MANIFEST,
            MT_DOCKER_MANIFEST,
            MT_OCI_INDEX,
            MT_DOCKER_LIST,
        ]
        .join(", ");
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let r = self.get(&path, Some(&accept))?;
        if r.status() != 200 {
            return Err(Error::msg(format!(
                "{}: manifest {reference}: HTTP {}",
                self.what(),
                r.status()
            )));
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
        let body = read_limited(
            r.into_body().into_reader(),
            &format!("{}: manifest {reference}", self.what()),
        )?;
        Ok((body, mt))
    }

    /// A stream of blob `digest` (redirects followed).
    pub fn blob(&self, digest: &str) -> Result<Box<dyn Read + Send>> {
        let path = format!("/v2/{}/blobs/{digest}", self.repository);
        let r = self.get(&path, None)?;
        if r.status() != 200 {
            return Err(Error::msg(format!(
                "{}: blob {digest}: HTTP {}",
                self.what(),
                r.status()
            )));
        }
        Ok(Box::new(r.into_body().into_reader()))
    }
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
}
