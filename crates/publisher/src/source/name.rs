//! Image names (`registry/repository:tag`): parsed and normalised the way
//! docker/distribution's reference grammar says, and made from file names.

use crate::{Error, Result};

/// `registry/repository:tag` of the published image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    pub registry: String,
    pub repository: String,
    pub tag: String,
}

/// Longest `registry/repository`, as docker/distribution's reference allows.
const NAME_MAX: usize = 255;

impl ImageName {
    /// Parse `[registry[:port]/]repository[:tag]` with docker.io normalisation,
    /// following docker/distribution's reference grammar, stricter in one
    /// point: the registry host in lower case too (names that differ in case
    /// only would name two trees for one registry). Anything else is refused
    /// naming the name and the rule it breaks: non-ASCII (look-alikes such as
    /// the Kelvin sign U+212A for `K`), upper case, empty or malformed path
    /// components, a malformed tag, too long, or a digest (content, not a place
    /// to publish to).
    pub fn parse(s: &str) -> Result<ImageName> {
        let bad = |rule: String| Error::msg(format!("invalid image name {s:?}: {rule}"));
        if let Some(c) = s.chars().find(|c| !c.is_ascii()) {
            return Err(bad(format!(
                "{c:?} (U+{:04X}) is not ASCII; names are ASCII only, so that no look-alike of a letter names another tree",
                u32::from(c)
            )));
        }
        if s.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(bad("control characters and spaces are not allowed".into()));
        }
        if let Some((_, d)) = s.split_once('@') {
            return Err(bad(match check_digest(d) {
                Ok(()) => "a digest (@...) names content, not a place to publish to: give registry/repository:tag".into(),
                Err(rule) => rule,
            }));
        }
        // docker's rule: the first component is a registry when it has a '.'
        // or a ':', is "localhost", or has upper case
        let (domain, rest) = match s.split_once('/') {
            Some((f, r))
                if f.contains(['.', ':'])
                    || f == "localhost"
                    || f.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (f, r)
            }
            _ => ("docker.io", s),
        };
        let (path, tag) = match rest.rsplit_once(':') {
            Some((p, t)) if !t.contains('/') => (p, t),
            _ => (rest, "latest"),
        };
        check_domain(domain).map_err(bad)?;
        check_path(path).map_err(bad)?;
        check_tag(tag).map_err(bad)?;
        let repository = if domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        if domain.len() + 1 + repository.len() > NAME_MAX {
            return Err(bad(format!(
                "registry/repository is longer than {NAME_MAX} characters"
            )));
        }
        Ok(ImageName {
            registry: domain.to_string(),
            repository,
            tag: tag.to_string(),
        })
    }
    pub fn full(&self) -> String {
        format!("{}/{}:{}", self.registry, self.repository, self.tag)
    }
}

/// `host[:port]`: host a domain name (components `[a-z0-9]` with inner `-`,
/// joined by `.`) or `[IPv6]`, port 1 to 65535.
fn check_domain(d: &str) -> std::result::Result<(), String> {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|b| b.is_ascii_digit())
            || !(1..=65535).contains(&p.parse::<u32>().unwrap_or(0))
        {
            return Err(format!(
                "registry port {p:?} is not a number from 1 to 65535"
            ));
        }
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if !v6.is_empty()
            && v6
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase() || b == b':')
        {
            return Ok(());
        }
        return Err(format!(
            "registry host {host:?} is not an [IPv6] address in lower case"
        ));
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "registry host {host:?} has upper case (this publisher wants it in lower case)"
        ));
    }
    for c in host.split('.') {
        let b = c.as_bytes();
        let ok = !b.is_empty()
            && b.iter()
                .all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || *x == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-';
        if !ok {
            return Err(format!(
                "registry host component {c:?} is not [a-z0-9] with inner '-' (in {host:?})"
            ));
        }
    }
    Ok(())
}

/// Path components `[a-z0-9]+` joined by one separator (`.`, `_`, `__` or
/// dashes), components joined by `/`.
fn check_path(path: &str) -> std::result::Result<(), String> {
    for c in path.split('/') {
        if c.is_empty() {
            return Err(format!("empty repository path component in {path:?}"));
        }
        if c.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(format!(
                "repository path component {c:?} has upper case (repository names are lower case)"
            ));
        }
        if !path_component_ok(c) {
            return Err(format!(
                "repository path component {c:?} is not [a-z0-9]+ joined by '.', '_', '__' or dashes"
            ));
        }
    }
    Ok(())
}

fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        match b[i] {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// Tags: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(t: &str) -> std::result::Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = t.len() <= 128
        && t.bytes().next().is_some_and(word)
        && t.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {t:?} is not [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
        ))
    }
}

/// `algorithm:hex`: algorithm components `[A-Za-z][A-Za-z0-9]*` joined by
/// `+.-_`, at least 32 hex digits.
fn check_digest(d: &str) -> std::result::Result<(), String> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err(format!("digest {d:?} is not algorithm:hex"));
    };
    let alg_ok = alg.split(['+', '.', '-', '_']).all(|c| {
        c.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && c.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if !alg_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "digest {d:?} is not algorithm:hex (at least 32 hex digits)"
        ));
    }
    Ok(())
}

/// A repository name component made from a file name: kept when the grammar
/// allows it, else lower case with every other character a `-` (no leading,
/// trailing or mixed separators), at most 128 characters.
pub(crate) fn sanitize(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    if lower.len() <= 128 && path_component_ok(&lower) {
        return lower;
    }
    let mut t = String::new();
    for c in lower.chars() {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            t.push(c);
        } else if !t.is_empty() && !t.ends_with('-') {
            t.push('-');
        }
    }
    t.truncate(128);
    let t = t.trim_end_matches('-');
    if t.is_empty() {
        "image".into()
    } else {
        t.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_like_docker() {
        let n = ImageName::parse("busybox").unwrap();
        assert_eq!(n.full(), "docker.io/library/busybox:latest");
        let n = ImageName::parse("127.0.0.1:5000/test/wh:1").unwrap();
        assert_eq!(
            (n.registry.as_str(), n.repository.as_str(), n.tag.as_str()),
            ("127.0.0.1:5000", "test/wh", "1")
        );
        assert_eq!(
            ImageName::parse("localhost/x").unwrap().full(),
            "localhost/x:latest"
        );
        assert_eq!(
            ImageName::parse("user/app:v2").unwrap().full(),
            "docker.io/user/app:v2"
        );
        assert!(ImageName::parse("a/../b:1").is_err());
        assert!(ImageName::parse(".layers/x:1").is_err());
        assert!(ImageName::parse("reg.io/.flat:1").is_err());
        assert!(ImageName::parse("reg.io/x:a:b").is_err());
    }

    #[test]
    fn names_follow_the_reference_grammar() {
        for good in [
            "a",
            "reg.io:5000/a/b-c/d__e.f:T_1.x-y",
            "[::1]:5000/x:1",
            "localhost/a--b:latest",
            "127.0.0.1/x",
        ] {
            assert!(ImageName::parse(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("\u{212a}.com/x:1", "U+212A"),
            ("Example.com/x:1", "upper case"),
            ("reg.io/App:1", "upper case"),
            ("reg.io/a//b:1", "empty"),
            ("reg.io/a-/b:1", "\"a-\""),
            ("reg.io/a._b:1", "\"a._b\""),
            ("reg.io/a:.t", "tag"),
            (
                "reg.io/a:1@sha256:0123456789abcdef0123456789abcdef",
                "digest",
            ),
            ("reg.io/a@md5:zz", "algorithm:hex"),
            ("reg.io:0/a:1", "port"),
            ("-reg.io/a:1", "registry host component"),
            ("reg.io/a b:1", "spaces"),
        ] {
            let e = ImageName::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains(says) && e.contains("invalid image name"),
                "{bad}: {e}"
            );
        }
        let long = format!("reg.io/{}:1", "a".repeat(250));
        assert!(ImageName::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("255"));
    }

    #[test]
    fn sanitized_file_names_are_valid_components() {
        for f in [
            "My App.tar",
            "a-.b",
            "__x__",
            "é",
            "busybox_1.36",
            "x".repeat(300).as_str(),
        ] {
            let c = sanitize(f);
            assert!(path_component_ok(&c) && c.len() <= 128, "{f} -> {c}");
        }
        assert_eq!(sanitize("busybox_1.36"), "busybox_1.36");
    }
}
